"""CXL operations on a booted guest, for tests: poison injected, listed and cleared (``vm.cxl``).

Two ways to put poison on a type-3 device:

* ``via="qmp"``: QEMU's ``cxl-inject-poison`` (path = the device's QOM path, start = DPA,
  length = a multiple of 64). The device adds the range to its poison list; the guest kernel
  learns of it only when it reads the list (the record's source reads ``Internal``).
* ``via="debugfs"``: the guest kernel's own ``/sys/kernel/debug/cxl/memN/inject_poison``, which
  sends the device an Inject Poison mailbox command for 64 bytes at a DPA (source
  ``Injected``); ``clear_poison`` is its counterpart, and clears either kind.

The poison list is read the kernel's way: ``memN/trigger_poison_list`` makes it fetch the
device's list and trace a ``cxl_poison`` event per record (with the HPA and region when the DPA
is mapped). The guest program is ``files/cxl-poison.sh``
(:data:`~harness.guest.protocol.CXL_POISON`); this module builds its command lines and parses
its output (:func:`parse_poison_output`, pure). Each result also carries the guest's
``HardwareCorrupted`` from /proc/meminfo: the kernel's memory-failure handling takes a page
offline only on a machine check (drivers/cxl/core/mce.c), which QEMU's type-3 device does not
raise, so injected poison leaves it unchanged here.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from harness.errors import GuestCommandError
from harness.guest.protocol import CXL_HOTPLUG, CXL_POISON
from harness.guest.setup import (
    RegionResult,
    SetupResult,
    memdev_pci_key,
    parse_error,
    parse_setup_output,
    setup_command,
    setup_plan,
)
from harness.topology.model import GuestSetup, Topology

#: The size of one poison record the kernel's debugfs injects and clears (a cache line).
POISON_GRANULE = 64


class CxlOpError(GuestCommandError):
    """A CXL operation in the guest failed; the message names the step and the sysfs file."""


@dataclass(frozen=True)
class PoisonRecord:
    """One record of a memdev's poison list, as the kernel traced it."""

    memdev: str
    dpa: int
    length: int
    source: str                 # Injected (debugfs/mailbox), Internal (QEMU's QMP), Unknown, ...
    hpa: int | None = None      # where the DPA is mapped in a committed region
    region: str | None = None


@dataclass(frozen=True)
class PoisonReport:
    """What one ``cxl-poison`` run printed."""

    records: tuple[PoisonRecord, ...] = ()
    hardware_corrupted_kb: int | None = None   # /proc/meminfo HardwareCorrupted after the step
    done: bool = False                          # a list run finished


def _int(v: str | None) -> int | None:
    return None if v is None or v in ("", "-") else int(v, 0)


def parse_poison_output(text: str) -> PoisonReport:
    """``cxl-poison`` stdout -> :class:`PoisonReport`. Raises CxlOpError on its ``error`` line."""
    err = parse_error(text)
    if err:
        step, file, msg = err
        raise CxlOpError(f"CXL poison {step} failed: {file}: {msg}", detail=text.strip())
    records, hc, done = [], None, False
    for line in text.splitlines():
        words = line.split()
        kv = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        if words[:1] == ["poison"]:
            try:
                records.append(PoisonRecord(memdev=kv["memdev"], dpa=int(kv["dpa"], 0), length=int(kv["length"], 0),
                                            source=kv.get("source", ""), hpa=_int(kv.get("hpa")),
                                            region=kv.get("region") if kv.get("region") not in (None, "", "-") else None))
            except (KeyError, ValueError) as e:
                raise CxlOpError(f"cxl-poison printed a malformed line ({e}): {line}") from None
        elif words[:1] == ["meminfo"]:
            hc = _int(kv.get("hardware_corrupted_kb"))
        elif words[:1] == ["done"]:
            done = True
    return PoisonReport(records=tuple(records), hardware_corrupted_kb=hc, done=done)


def poison_command(op: str, memdev: str, dpa: int | None = None) -> str:
    """The guest command line for ``cxl-poison OP memN [DPA]``."""
    args = [CXL_POISON, op, memdev] + ([f"{dpa:#x}"] if dpa is not None else [])
    return " ".join(shlex.quote(a) for a in args)


def qmp_poison_arguments(device_id: str, dpa: int, length: int) -> dict[str, Any]:
    """``cxl-inject-poison`` arguments for topology device ``device_id`` (QEMU's QOM path for it)."""
    if dpa % POISON_GRANULE or length <= 0 or length % POISON_GRANULE:
        raise CxlOpError(f"poison at DPA {dpa:#x}, length {length}: both must be multiples of {POISON_GRANULE} "
                         "(QEMU and the CXL spec count poison in 64-byte lines)")
    return {"path": f"/machine/peripheral/{device_id}", "start": dpa, "length": length}


class _Guest(Protocol):
    @property
    def topology(self) -> Topology: ...

    setup: SetupResult

    def run(self, command: str, *, timeout: float = ..., check: bool = ...) -> Any: ...


class CxlOps:
    """``vm.cxl``: CXL operations on a booted machine (``vm``: its ``run``, topology, set-up, and
    ``qmp`` for QEMU's monitor). Devices are named by topology id (``cxl-vmem0``) or guest memdev
    (``mem0``)."""

    def __init__(self, vm: _Guest, qmp: Callable[[str, dict[str, Any] | None], Any],
                 plug_args: Callable[[str, int], tuple[list[dict[str, Any]], dict[str, Any]]] | None = None):
        self._vm = vm
        self._qmp = qmp
        self._plug_args = plug_args      # device id, generation -> (object-add args, device_add args)
        self._plugs = 0
        self._memdevs: dict[str, str] = dict(vm.setup.memdevs)

    # -- names -------------------------------------------------------------------
    def memdev(self, device: str) -> str:
        """The guest's memN for topology device ``device`` (a memN is returned as it is)."""
        if device.startswith("mem") and device[3:].isdigit():
            return device
        if device not in self._memdevs:
            self._memdevs.update(self._find_memdevs([device]))
        return self._memdevs[device]

    def device_id(self, device: str) -> str:
        """The topology id of ``device`` (a memN is looked up among the mapped devices)."""
        if not (device.startswith("mem") and device[3:].isdigit()):
            return device
        if device not in self._memdevs.values():
            t = self._vm.topology
            self._memdevs.update(self._find_memdevs([d.id for d in t.cxl.devices] if t.cxl else []))
        for dev_id, md in self._memdevs.items():
            if md == device:
                return dev_id
        raise CxlOpError(f"no topology device is the guest's {device}")

    def _find_memdevs(self, ids: list[str]) -> dict[str, str]:
        """Map topology ids to memNs by PCI path, as the set-up does (``cxl-setup`` with memdev steps only)."""
        t = self._vm.topology
        known = {d.id for d in t.cxl.devices} if t.cxl else set()
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise CxlOpError(f"'{unknown[0]}' is not a CXL device of this topology",
                             hint=f"devices: {', '.join(sorted(known)) or 'none'}")
        plan = "".join(f"memdev {i} {memdev_pci_key(t, i)} -\n" for i in ids)
        r = self._vm.run(setup_command(f"# memdevs\nmemdevs {len(known)} 30\n{plan}"), timeout=90, check=False)
        err = parse_error(r.stdout)
        if err:
            raise CxlOpError(f"finding memdevs failed at '{err[0]}': {err[1]}: {err[2]}")
        return parse_setup_output(r.stdout).memdevs

    # -- poison ------------------------------------------------------------------
    def _poison(self, op: str, device: str, dpa: int | None = None, timeout: float = 60) -> PoisonReport:
        r = self._vm.run(poison_command(op, self.memdev(device), dpa), timeout=timeout, check=False)
        report = parse_poison_output(r.stdout)
        if r.exit_status != 0:
            raise CxlOpError(f"cxl-poison {op} exited with status {r.exit_status}", detail=(r.stdout + r.stderr).strip())
        return report

    def inject_poison(self, device: str, dpa: int, length: int = POISON_GRANULE, *, via: str = "qmp") -> PoisonReport:
        """Poison ``length`` bytes at ``dpa`` of ``device``: through QEMU (``via="qmp"``, any multiple
        of 64 bytes) or the guest kernel's debugfs (``via="debugfs"``, 64 bytes per call)."""
        if via == "qmp":
            self._qmp("cxl-inject-poison", qmp_poison_arguments(self.device_id(device), dpa, length))
            return PoisonReport()
        if via != "debugfs":
            raise CxlOpError(f"via={via!r}: use 'qmp' or 'debugfs'")
        qmp_poison_arguments(device, dpa, length)  # the same 64-byte rule
        out = PoisonReport()
        for off in range(0, length, POISON_GRANULE):
            out = self._poison("inject", device, dpa + off)
        return out

    def clear_poison(self, device: str, dpa: int, length: int = POISON_GRANULE) -> PoisonReport:
        """Clear poison at ``dpa`` (64 bytes per call) through the guest kernel's debugfs ``clear_poison``."""
        qmp_poison_arguments(device, dpa, length)
        out = PoisonReport()
        for off in range(0, length, POISON_GRANULE):
            out = self._poison("clear", device, dpa + off)
        return out

    def poison_list(self, device: str) -> list[PoisonRecord]:
        """The device's poison list as the guest kernel reads it (``trigger_poison_list``, ``cxl_poison`` events)."""
        report = self._poison("list", device)
        if not report.done:
            raise CxlOpError(f"cxl-poison list {device} did not finish (no 'done' line)")
        return list(report.records)

    def hardware_corrupted_kb(self) -> int | None:
        """/proc/meminfo HardwareCorrupted: memory the kernel took offline as poisoned."""
        out = self._vm.run("grep HardwareCorrupted /proc/meminfo", timeout=30, check=False).stdout.split()
        return int(out[1]) if len(out) >= 2 and out[1].isdigit() else None

    # -- hot-plug ----------------------------------------------------------------
    def _hotplug_port(self, device: str) -> str:
        t = self._vm.topology
        assert t.cxl
        dev = next((d for d in t.cxl.devices if d.id == device), None)
        if dev is None:
            raise CxlOpError(f"'{device}' is not a CXL device of this topology")
        port = next((rp for hb in t.cxl.host_bridges for rp in hb.root_ports if rp.id == dev.port), None)
        if port is None or port.hotplug is not True:
            raise CxlOpError(f"{device}'s port {dev.port} is not declared hot-pluggable",
                             hint=f"set hotplug: true on root port {dev.port} in the topology (root ports only)")
        return dev.port

    def regions_of(self, device: str) -> list[str]:
        """The guest regions a device's memdev takes part in (their endpoint decoders' region links)."""
        r = self._vm.run(f"{CXL_HOTPLUG} regions {self.memdev(device)}", timeout=60, check=False)
        err = parse_error(r.stdout)
        if err or r.exit_status != 0:
            raise CxlOpError(f"finding the regions of {device} failed: {err[2] if err else r.exit_status}")
        return sorted({ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("region ")})

    def teardown_region(self, region: str) -> dict[str, str]:
        """Offline a region's memory (pages migrate off first), remove it from its node, delete the
        region and free its devices' DPA (``cxl-hotplug teardown``). Returns its result fields."""
        r = self._vm.run(f"{CXL_HOTPLUG} teardown {shlex.quote(region)}", timeout=600, check=False)
        err = parse_error(r.stdout)
        if err or r.exit_status != 0:
            step, file, msg = err or ("teardown", region, f"exit status {r.exit_status}")
            raise CxlOpError(f"tearing down {region} failed at '{step}': {file}: {msg}", detail=r.stdout.strip())
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("teardown ")), "")
        return dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)

    def remove_device(self, device: str, *, timeout: float = 120) -> list[dict[str, str]]:
        """Hot-remove topology device ``device`` (below a root port declared ``hotplug: true``): tear
        down every region it is in (:meth:`teardown_region`), ``device_del``, wait until QEMU has
        released it (gone from ``/machine/peripheral``: DEVICE_DELETED) and the guest's memdev is gone.
        Returns each torn-down region's fields."""
        self._hotplug_port(device)
        md = self.memdev(device)
        done = [self.teardown_region(reg) for reg in self.regions_of(device)]
        self._qmp("device_del", {"id": device})
        deadline = time.monotonic() + timeout
        while device in {p["name"] for p in self._qmp("qom-list", {"path": "/machine/peripheral"})}:
            if time.monotonic() > deadline:
                raise CxlOpError(f"QEMU did not release {device} within {timeout:g} s of device_del (no DEVICE_DELETED)",
                                 hint="the guest must power the slot off (pciehp, about 5 s after the attention button)")
            time.sleep(0.5)
        r = self._vm.run(f"{CXL_HOTPLUG} gone {md} {int(timeout)}", timeout=timeout + 30, check=False)
        if r.exit_status != 0:
            raise CxlOpError(f"the guest still has {md} after {device} was removed", detail=r.stdout.strip())
        self._memdevs.pop(device, None)
        return done

    def add_device(self, device: str, *, timeout: float = 120) -> str:
        """Plug topology device ``device`` in again where it was (fresh backends of the same kind and
        files: ``object-add``, ``device_add``); returns the guest memdev that comes up for it."""
        self._hotplug_port(device)
        if self._plug_args is None:
            raise CxlOpError("this machine cannot describe its devices for device_add")
        self._plugs += 1
        objects, dev = self._plug_args(device, self._plugs)
        for obj in objects:
            self._qmp("object-add", obj)
        self._qmp("device_add", dev)
        self._memdevs.pop(device, None)
        # pciehp may power the new slot off and on again while it settles (link up after
        # presence detect): a memdev seen once is checked again once its endpoint port is up.
        deadline = time.monotonic() + timeout
        while True:
            try:
                md = self.memdev(device)
                left = max(5, int(deadline - time.monotonic()))
                r = self._vm.run(f"{CXL_HOTPLUG} ready {md} {left}", timeout=left + 30, check=False)
                if r.exit_status == 0:
                    self._memdevs.pop(device, None)
                    if self.memdev(device) == md:
                        return md
                self._memdevs.pop(device, None)
            except CxlOpError:
                self._memdevs.pop(device, None)
            if time.monotonic() > deadline:
                raise CxlOpError(f"no memdev with its endpoint port came up for {device} within {timeout:g} s of device_add")
            time.sleep(2)

    def recreate_region(self, index: int, *, timeout: float = 300) -> RegionResult:
        """Create ``guest.regions[index]`` again as the boot's set-up did, and online it; its result."""
        t = self._vm.topology
        plan = setup_plan(dataclasses.replace(t, guest=GuestSetup(regions=[t.guest.regions[index]])))
        r = self._vm.run(setup_command(plan), timeout=timeout, check=False)
        err = parse_error(r.stdout)
        if err or r.exit_status != 0:
            step, file, msg = err or ("region", "-", f"exit status {r.exit_status}")
            raise CxlOpError(f"re-creating guest.regions[{index}] failed at '{step}': {file}: {msg}", detail=r.stdout.strip())
        res = parse_setup_output(r.stdout)
        self._memdevs.update(res.memdevs)
        return res.regions[0]
