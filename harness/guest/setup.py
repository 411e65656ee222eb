"""Guest set-up after boot: create the topology's CXL regions and online them.

The work is done in the guest by ``files/cxl-setup.sh`` (shipped in the image as
:data:`~harness.guest.protocol.CXL_SETUP`), which drives the kernel's CXL sysfs ABI directly,
the same steps ``cxl create-region`` takes:

1. read ``decoder0.<window>/create_{ram,pmem}_region`` for the next region
   name, write it back; (pmem) write a ``uuid``;
2. region ``interleave_granularity``, ``interleave_ways``;
3. per device, in position order: the first free endpoint decoder of its
   memdev (``mode`` none, ``dpa_size`` 0) gets ``mode`` and ``dpa_size`` =
   size / ways;
4. region ``size``, ``target<i>`` per decoder, ``commit`` = 1;
5. ``auto_online_blocks`` set for the region's ``online`` (online,
   online_movable, or offline for devdax), the region bound to the
   ``cxl_region`` driver; dax_cxl then creates ``daxN.0`` and kmem adds it
   as system RAM on a new node; any block still offline is onlined, a devdax
   region's dax device is moved from kmem to device_dax;
6. pmem regions surface as an nvdimm region; ``ndctl create-namespace -m
   devdax`` gives the dax device (kmem for online: system-ram), unless the
   devices' label areas already describe a namespace there (file-backed
   devices booted before): that one is used as it is (``labels=reused``).

After the regions, ``files/provision.sh`` (:data:`~harness.guest.protocol.PROVISION`) carries out
``guest.provision`` (:func:`provision_plan`): a ``memmap-kmem`` range becomes a devdax namespace
bound to kmem; the private-node series' paths report ``skipped`` with the reason on a kernel
without them (:class:`ProvisionResult`).

This module is the host side, pure but for :func:`apply_guest_setup`:
:func:`setup_plan` turns the topology into the program's plan (its format is in the
script's header), :func:`parse_setup_output` turns the program's result lines into a
:class:`SetupResult`, :func:`parse_error` reads its ``error step=... file=... msg=...``
line. A failed sysfs write names the step, the file and the errno text.

Memdev mapping. The topology names devices by QEMU id; the guest calls them
mem0, mem1, ... in probe order, and QEMU gives every device without ``sn=``
the same serial (0), so neither names nor serials identify a device. The
PCI path does: a pxb-cxl's root bus number is its ``bus_nr``, and QEMU
places root ports on a host bridge, and downstream ports in a switch, at
device numbers 0, 1, 2, ... in the order :mod:`harness.qemu.argv` creates
them (:class:`~harness.topology.cxltree.CxlTree` holds each port's position) (the topology's list order; it passes no ``addr=``); a switch's
upstream port and a type-3 device are device 0 on their parent port's
secondary bus. So each device has a key ``<bus_nr hex>/<dev.fn>/...`` (e.g.
``0c/00.0/00.0/01.0/00.0`` for the device on a switch's second downstream
port), which the script computes from the memdev's sysfs path
(``/sys/devices/pci0000:0c/0000:0c:00.0/.../memN``). Secondary bus numbers,
which the guest assigns, are not part of the key. Where the topology gives
a serial, the script checks it as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import GuestCommandError
from harness.guest.protocol import CXL_SETUP, GUEST_RUN_DIR, MAX_COMMAND_BYTES, PROVISION
from harness.guest.upload import upload
from harness.runner import GuestRunner
from harness.topology.cxltree import CxlTree
from harness.topology.labels import device_serial
from harness.topology.model import Provision, Topology
from harness.topology.provision import CXL_DRIVERS, effective_features, np_ops_mask, provision_range
from harness.topology.regions import region_size, region_ways

#: Where the plan is written in the guest before the program runs.
GUEST_PLAN_PATH = f"{GUEST_RUN_DIR}/cxl-setup.plan"
PROVISION_PLAN_PATH = f"{GUEST_RUN_DIR}/provision.plan"
#: Where the private-node provisioning module is copied in the guest (``via: private-module``).
GUEST_PRIVATE_MODULE = f"{GUEST_RUN_DIR}/numa_harness_private.ko"
#: Seconds the guest waits for every CXL memdev to appear (cxl_pci probing under TCG).
MEMDEV_WAIT = 30

ONLINE_TYPE = {"system-ram": "online", "system-ram-movable": "online_movable", "devdax": "offline"}


class GuestSetupError(GuestCommandError):
    """The guest set-up program failed. ``step`` and ``file`` name the failing sysfs write."""

    def __init__(self, message: str, *, step: str | None = None, file: str | None = None,
                 hint: str | None = None, detail: str | None = None):
        super().__init__(message, hint=hint, detail=detail)
        self.step = step
        self.file = file


@dataclass(frozen=True)
class RegionResult:
    """One region as the guest kernel reports it after set-up."""

    name: str                   # region0, ...
    size: int                   # bytes
    node: int | None         # NUMA node of its memory (target node for devdax); None if unknown
    mode: str                   # ram | pmem
    online: str                 # system-ram | system-ram-movable | devdax
    dax: str | None = None   # daxN.M, if a dax device was created
    memdevs: tuple[str, ...] = ()    # guest memdevs in position order
    decoders: tuple[str, ...] = ()   # endpoint decoders in position order
    namespace: str | None = None     # pmem: the nvdimm namespace (namespaceN.M) behind ``dax``
    labels: str | None = None        # pmem: "created" this boot, or "reused" from the label area


@dataclass(frozen=True)
class ProvisionResult:
    """One ``guest.provision`` entry as the guest carried it out (or why it could not)."""

    node: int
    via: str                   # memmap-kmem, dax_test, cxl_mempolicy, cxl_compression
    ok: bool                   # False: skipped, the kernel lacks the path (``reason``)
    bytes: int = 0             # memory online on the node afterwards
    dax: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class SetupResult:
    """What :func:`apply_guest_setup` did. Empty when the topology asks for nothing."""

    regions: list[RegionResult] = field(default_factory=list)
    provisioned: list[ProvisionResult] = field(default_factory=list)
    memdevs: dict[str, str] = field(default_factory=dict)   # QEMU device id -> guest memdev (memN)
    demotion: bool | None = None
    output: str = ""            # the program's stdout, for logs


# --------------------------------------------------------------------------
# Memdev mapping
# --------------------------------------------------------------------------


def memdev_pci_key(t: Topology, device_id: str) -> str:
    """The PCI path key of type-3 device ``device_id``, as the guest program derives it from sysfs.

    ``<root bus hex>/<dev.fn of each bridge>/<dev.fn of the device>`` (:meth:`CxlTree.pci_path`).
    """
    bus, hops = CxlTree(t.cxl).pci_path(device_id)
    return f"{bus:02x}/" + "/".join(hops)


def has_setup(t: Topology) -> bool:
    """Whether the topology asks for anything after boot."""
    return bool(t.guest.regions) or t.guest.demotion is not None or bool(t.guest.provision)


def _provision_step(t: Topology, p: Provision) -> str:
    if p.via == "memmap-kmem":
        start, size = provision_range(t, p)
        return f"memmap-kmem {p.node} {start} {size} {p.zone}"
    if p.via == "private-module":
        start, size = provision_range(t, p)
        ops = np_ops_mask(effective_features(p)) if not p.cram else 0
        return f"private-module {p.node} {start} {size} {ops:#x} {int(p.cram)} {GUEST_PRIVATE_MODULE}"
    if p.via == "dax_test":
        start, size = provision_range(t, p)
        return f"dax_test {p.node} {start} {size} {features_mask(p.features):#x}"
    assert p.device is not None
    return f"cxl-driver {p.node} {CXL_DRIVERS[p.via]} {memdev_pci_key(t, p.device)}"


#: Bit order of ``features`` in a ``dax_test features=`` mask: the v4 series' NP_OPS_* order.
FEATURE_BITS = ("migration", "mempolicy", "demotion", "protect_write", "reclaim", "numa_balancing", "compaction",
                "longterm_pin", "ksm", "hugetlb")


def features_mask(features: list[str]) -> int:
    return sum(1 << FEATURE_BITS.index(f) for f in features if f in FEATURE_BITS)


def provision_plan(t: Topology) -> str:
    """The plan ``provision`` runs for ``t.guest.provision`` (format: the script's header)."""
    return "\n".join(["# numa-harness provision plan", *(_provision_step(t, p) for p in t.guest.provision)]) + "\n"


def parse_provision_output(text: str) -> list[ProvisionResult]:
    """The provision program's stdout -> one result per step. Raises GuestSetupError without ``done``."""
    out: list[ProvisionResult] = []
    done = False
    for line in text.splitlines():
        if line.startswith("provisioned "):
            head, _, reason = line.partition(" reason=")
            kv = _kv(head.split()[1:])
            try:
                out.append(ProvisionResult(node=int(kv["node"]), via=kv["via"], ok=kv["status"] == "ok",
                                           bytes=int(kv.get("bytes", 0)),
                                           dax=kv.get("dax") if kv.get("dax") not in (None, "-") else None,
                                           reason=reason))
            except (KeyError, ValueError) as e:
                raise GuestSetupError(f"provisioning printed a malformed line ({e}): {line}", detail=_tail(text)) from None
        elif line.startswith("done provisioned="):
            done = True
    if not done:
        raise GuestSetupError("provisioning did not finish (no 'done' line)", detail=_tail(text))
    return out


# --------------------------------------------------------------------------
# The plan (pure)
# --------------------------------------------------------------------------


def setup_plan(t: Topology) -> str:
    """The plan ``cxl-setup`` runs for ``t.guest`` (format: the header of ``files/cxl-setup.sh``)."""
    lines = ["# numa-harness cxl-setup plan"]
    regions = t.guest.regions
    if regions:
        assert t.cxl
        devs = {d.id: d for d in t.cxl.devices}
        used = list(dict.fromkeys(d for r in regions for d in r.devices))
        lines.append(f"memdevs {len(t.cxl.devices)} {MEMDEV_WAIT}")
        for dev in used:
            serial = device_serial(devs[dev])
            lines.append(f"memdev {dev} {memdev_pci_key(t, dev)} {serial if serial is not None else '-'}")
        for r in regions:
            size, ways = region_size(t, r), region_ways(r)
            fields = [r.window, r.mode, ways, int(r.granularity), size, size // ways, r.online, *r.devices]
            lines.append("region " + " ".join(str(f) for f in fields))
    if t.guest.demotion is not None:
        lines.append(f"demotion {'true' if t.guest.demotion else 'false'}")
    return "\n".join(lines) + "\n"


def setup_command(plan: str, program: str = CXL_SETUP, plan_path: str = GUEST_PLAN_PATH) -> str:
    """One guest command line: write ``plan`` to ``plan_path``, run ``program`` (``cxl-setup``) on it.

    Raises GuestSetupError if it would exceed what dropbear accepts in one exec request.
    """
    marker = "HARNESS_CXL_SETUP_PLAN"
    assert marker not in plan and plan.endswith("\n")
    cmd = (f"set -e\nmkdir -p {GUEST_RUN_DIR}\ncat > {plan_path} <<'{marker}'\n{plan}{marker}\n"
           f"exec {program} {plan_path}\n")
    if len(cmd.encode()) >= MAX_COMMAND_BYTES:
        raise GuestSetupError(f"the guest set-up plan is {len(plan)} bytes, too long for one SSH command "
                              f"(limit {MAX_COMMAND_BYTES})", hint="split the topology's guest regions")
    return cmd


# --------------------------------------------------------------------------
# Output parsing (pure)
# --------------------------------------------------------------------------


def _kv(words: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in words if "=" in w)


def _names(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def parse_error(text: str) -> tuple[str, str, str] | None:
    """(step, file, message) of the program's ``error`` line, if any."""
    for line in text.splitlines():
        if line.startswith("error step="):
            body = line[len("error "):]
            step = body[len("step="):body.index(" file=")] if " file=" in body else body[len("step="):]
            rest = body[body.index(" file=") + len(" file="):] if " file=" in body else ""
            file, _, msg = rest.partition(" msg=")
            return step, file, msg
    return None


def parse_setup_output(text: str) -> SetupResult:
    """The program's stdout -> SetupResult. Raises GuestSetupError without its ``done`` line."""
    regions: list[RegionResult] = []
    memdevs: dict[str, str] = {}
    demotion: bool | None = None
    done: int | None = None
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "memdev" and len(words) >= 3:
                memdevs[words[1]] = words[2]
            elif words[0] == "region" and words[2:3] == ["committed"]:
                kv = _kv(words[3:])
                regions.append(RegionResult(
                    name=words[1], size=int(kv["size"]), node=int(kv["node"]) if kv.get("node") else None,
                    mode=kv["mode"], online=kv["online"], dax=kv.get("dax") or None,
                    memdevs=_names(kv.get("memdevs", "")), decoders=_names(kv.get("decoders", "")),
                    namespace=kv.get("namespace") or None, labels=kv.get("labels") or None))
            elif words[0] == "demotion":
                demotion = _kv(words[1:]).get("enabled") == "true"
            elif words[0] == "done":
                done = int(_kv(words[1:])["regions"])
        except (KeyError, ValueError) as e:
            raise GuestSetupError(f"guest set-up printed a malformed line ({e}): {line}", detail=_tail(text)) from None
    if done is None:
        raise GuestSetupError("guest set-up did not finish (no 'done' line)", detail=_tail(text))
    if done != len(regions):
        raise GuestSetupError(f"guest set-up reports {done} regions but printed {len(regions)}", detail=_tail(text))
    return SetupResult(regions=regions, memdevs=memdevs, demotion=demotion, output=text)


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


# --------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------


def apply_guest_setup(vm: GuestRunner | None, t: Topology, timeout: float = 120, *,
                      kernel_image: Path | None = None) -> SetupResult:
    """Run ``cxl-setup`` with :func:`setup_plan` in ``vm`` (a booted guest) and parse its result.

    Returns an empty SetupResult, running nothing, when ``t`` asks for no
    set-up. Raises GuestSetupError (a GuestCommandError) naming the failed
    step and sysfs file, with the program's output tail (dmesg included).
    """
    if not has_setup(t):
        return SetupResult()
    assert vm is not None
    result = _cxl_setup(vm, t, timeout) if t.guest.regions or t.guest.demotion is not None else SetupResult()
    if not t.guest.provision:
        return result
    if any(p.via == "private-module" for p in t.guest.provision):
        _upload_private_module(vm, kernel_image)
    r = vm.run(setup_command(provision_plan(t), PROVISION, PROVISION_PLAN_PATH), timeout=timeout, check=False)
    if r.exit_status != 0:
        raise _failed(r, "node provisioning")
    return SetupResult(regions=result.regions, provisioned=parse_provision_output(r.stdout), memdevs=result.memdevs,
                       demotion=result.demotion, output=result.output + r.stdout)


def _upload_private_module(vm: GuestRunner, kernel_image: Path | None) -> None:
    """Copy numa_harness_private.ko, built for the guest's kernel (``kernel_image``), to
    :data:`GUEST_PRIVATE_MODULE`.

    A kernel without a build tree gets no module; the provision step then reports ``skipped``."""
    from harness.kernel.private_module import module_for_kernel

    ko, _why = module_for_kernel(kernel_image)
    if ko is None:
        return
    r = vm.run(f"mkdir -p {GUEST_RUN_DIR}", timeout=60, check=False)
    if r.exit_status != 0:
        raise GuestSetupError(f"copying {ko.name} into the guest failed: {r.stderr.strip()}")
    try:
        upload(vm, ko.read_bytes(), GUEST_PRIVATE_MODULE, ko.name)
    except GuestCommandError as e:
        raise GuestSetupError(str(e)) from None


def _failed(r: Any, what: str) -> GuestSetupError:
    """The error for a guest set-up program that exited non-zero: the step and sysfs file
    from its ``error`` line if it printed one, else its exit status; its output tail as detail."""
    detail = _tail(r.stdout + ("\n" + r.stderr if r.stderr.strip() else ""), 30)
    err = parse_error(r.stdout)
    if err:
        step, file, msg = err
        return GuestSetupError(f"{what} failed at '{step}': {file}: {msg}", step=step, file=file, detail=detail)
    return GuestSetupError(f"{what} exited with status {r.exit_status}", detail=detail)


def _cxl_setup(vm: GuestRunner, t: Topology, timeout: float) -> SetupResult:
    r = vm.run(setup_command(setup_plan(t)), timeout=timeout, check=False)
    if r.exit_status != 0:
        error = _failed(r, "guest set-up")
        if error.step is None and r.exit_status == 127:
            raise GuestSetupError(f"{CXL_SETUP} is not in the guest",
                                  hint="the VM was booted from an image older than this harness: boot it again",
                                  detail=error.detail)
        raise error
    return parse_setup_output(r.stdout)
