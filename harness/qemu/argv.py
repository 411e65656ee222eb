"""Topology -> QEMU argv. Pure and deterministic: same topology, same list.

Only the machine the topology describes is generated here (memory, CPUs,
NUMA, HMAT, CXL, PCI devices). How the VM is run (kernel, initrd, serial
console, QMP, network, display) is added by :mod:`.bootargs`; option syntax and the
harness's own ids are :mod:`.options`.

The forms follow QEMU's docs/system/devices/cxl.rst (pxb-cxl, cxl-rp,
cxl-upstream/-downstream, cxl-type3, ``-M cxl-fmw.N.*``) and the ``-numa``
section of qemu-options (node, dist, hmat-lb, hmat-cache).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from harness.topology.cxltree import CxlTree
from harness.topology.labels import device_serial
from harness.topology.model import Node, Topology, Type3
from harness.topology.provision import kernel_params as provision_params
from harness.units import format_size

from .ids import BACKEND_PREFIX
from .options import kv


def backing_path(path: str, files_dir: str | None) -> str:
    """A backing file's path: absolute paths as written; relative ones under ``files_dir``
    (the harness's directory for backing files) when given."""
    if files_dir is None or PurePosixPath(path).is_absolute():
        return path
    return str(PurePosixPath(files_dir) / path)


def cpu_model(t: Topology, accel: str, hide_hypervisor: bool = True) -> str:
    """The -cpu value. Under TCG the hypervisor CPUID bit is hidden unless ``hide_hypervisor``
    is false: with it, a stock kernel's CXL region commit fails ("Failed to synchronize CPU
    cache state"). A kernel built with CONFIG_CXL_REGION_INVALIDATION_TEST=y needs no trick."""
    cpu = t.machine.cpu
    if accel == "tcg" and hide_hypervisor and "hypervisor" not in cpu:
        cpu += ",-hypervisor"
    return cpu


def machine_argv(t: Topology, *, accel: str = "tcg", tcg_thread: str | None = None,
                 files_dir: str | None = None, hide_hypervisor: bool = True) -> list[str]:
    """The QEMU arguments describing the topology's machine, for accelerator ``accel``.

    ``tcg_thread`` ("single" or "multi") adds ``thread=`` to ``-accel tcg`` (None: QEMU's
    default); ``files_dir`` is where relative backing-file paths live;
    ``hide_hypervisor=False`` keeps the guest CPU's hypervisor bit under TCG (see :func:`cpu_model`).
    """
    if accel not in ("tcg", "kvm"):
        raise ValueError(f"accel must be tcg or kvm, not {accel!r}")
    if tcg_thread not in (None, "single", "multi"):
        raise ValueError(f"tcg_thread must be single or multi, not {tcg_thread!r}")
    props = {"cxl": True if t.cxl else None, "hmat": True if t.hmat else None}
    accel_opt = kv(accel, thread=tcg_thread) if accel == "tcg" else accel
    argv = ["-machine", kv("q35", **props), "-accel", accel_opt, "-cpu", cpu_model(t, accel, hide_hypervisor)]
    mem = format_size(t.total_memory)
    if t.machine.maxmem is not None:
        mem = kv(mem, slots=t.machine.slots, maxmem=format_size(t.machine.maxmem))
    argv += ["-m", mem, "-smp", smp_spec(t)]
    argv += _numa(t, files_dir)
    if t.cxl:
        argv += _cxl(t, files_dir)
    for d in t.pci_devices:
        argv += ["-device", kv(d.driver, bus=d.bus, id=d.id)]
    for g in t.generic_initiators:
        argv += ["-object", kv("acpi-generic-initiator", id=g.id, pci__dev=g.device, node=g.node)]
    return argv


def smp_spec(t: Topology) -> str:
    """-smp value. When CPUs span several nodes, every vCPU gets its own socket:
    QEMU's default packs them into one socket (one LLC), and a guest kernel
    WARNs in topology_sane() when LLC siblings sit in different NUMA nodes."""
    if sum(1 for n in t.nodes if n.cpus) > 1:
        return f"{t.machine.smp},sockets={t.machine.smp},cores=1,threads=1"
    return str(t.machine.smp)


def _backend(bid: str, size: int, backend: str, share: bool, path: str | None) -> list[str]:
    kind = f"memory-backend-{backend}"
    return ["-object", kv(kind, id=bid, size=format_size(size), share=True if share else None, mem__path=path)]


def _numa(t: Topology, files_dir: str | None) -> list[str]:
    argv: list[str] = []
    for n in sorted(t.nodes, key=lambda n: n.id):
        argv += _node(n, files_dir)
    if t.slit:
        given = {(d.src, d.dst): d.value for d in t.slit.distances}
        if t.slit.symmetric:
            for (s, d), v in list(given.items()):
                given.setdefault((d, s), v)
        for (s, d), v in sorted(given.items()):
            argv += ["-numa", kv("dist", src=s, dst=d, val=v)]
    if t.hmat:
        for link in sorted(t.hmat.links, key=lambda lk: (lk.initiator, lk.target)):
            base = {"initiator": link.initiator, "target": link.target, "hierarchy": "memory"}
            if link.latency is not None:
                argv += ["-numa", kv("hmat-lb", **base, data__type="access-latency", latency=link.latency)]
            if link.bandwidth is not None:
                argv += ["-numa", kv("hmat-lb", **base, data__type="access-bandwidth", bandwidth=format_size(link.bandwidth))]
        for c in t.hmat.caches:
            argv += ["-numa", kv("hmat-cache", node__id=c.node, size=format_size(c.size), level=c.level,
                                  associativity=c.associativity, policy=c.policy, line=c.line)]
    return argv


def _node(n: Node, files_dir: str | None) -> list[str]:
    argv: list[str] = []
    memdev = None
    if n.memory:
        memdev = f"{BACKEND_PREFIX}node{n.id}"
        argv += _backend(memdev, n.memory, n.backend, n.share, backing_path(n.path, files_dir) if n.path else None)
    spec = f"node,nodeid={n.id}"
    for r in (n.cpus.ranges() if n.cpus else []):
        spec += f",cpus={r}"
    spec = kv(spec, memdev=memdev, initiator=n.initiator)
    return argv + ["-numa", spec]


def device_files(d: Type3, files_dir: str | None = None) -> dict[str, str]:
    """Backing file of each of a file-backed device's backends: {"vmem"|"pmem"|"lsa": path}."""
    if d.backend != "file" or not d.path:
        return {}
    base = backing_path(d.path, files_dir).rstrip("/")
    kinds = [k for k, size in (("vmem", d.volatile), ("pmem", d.persistent), ("lsa", d.lsa)) if size]
    return {k: f"{base}/{d.id}-{k}.raw" for k in kinds}


def _device_backends(d: Type3, files_dir: str | None) -> tuple[list[str], dict[str, str]]:
    argv: list[str] = []
    props: dict[str, str] = {}
    files = device_files(d, files_dir)

    def add(kind: str, size: int, prop: str) -> None:
        bid = f"{BACKEND_PREFIX}{d.id}-{kind}"
        argv.extend(_backend(bid, size, d.backend, True, files.get(kind)))
        props[prop] = bid

    if d.volatile:
        add("vmem", d.volatile, "volatile-memdev")
    if d.persistent:
        add("pmem", d.persistent, "persistent-memdev")
    if d.lsa:  # QEMU takes an LSA on volatile-only devices too (docs/system/devices/cxl.rst)
        add("lsa", d.lsa, "lsa")
    return argv, props


def type3_hotplug_qmp(d: Type3, files_dir: str | None, generation: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The QMP ``object-add`` arguments and the ``device_add`` arguments that plug device ``d`` in
    again after a ``device_del`` (pure). QEMU 10.0 keeps a removed cxl-type3's memory backends
    marked in use ("can't be used multiple times"), so each plug gets fresh backends, suffixed
    ``-<generation>``, of the same kind, size and file: a file-backed device keeps its data."""
    files = device_files(d, files_dir)
    objects: list[dict[str, Any]] = []
    device: dict[str, Any] = {"driver": "cxl-type3", "bus": d.port}
    for kind, size, prop in (("vmem", d.volatile, "volatile-memdev"), ("pmem", d.persistent, "persistent-memdev"),
                             ("lsa", d.lsa, "lsa")):
        if not size:
            continue
        bid = f"{BACKEND_PREFIX}{d.id}-{kind}-{generation}"
        obj: dict[str, Any] = {"qom-type": f"memory-backend-{d.backend}", "id": bid, "size": int(size), "share": True}
        if kind in files:
            obj["mem-path"] = files[kind]
        objects.append(obj)
        device[prop] = bid
    device["id"] = d.id
    serial = device_serial(d)
    if serial is not None:
        device["sn"] = serial
    return objects, device


def _cxl(t: Topology, files_dir: str | None) -> list[str]:
    assert t.cxl
    cxl = t.cxl
    argv: list[str] = []
    for d in cxl.devices:
        argv += _device_backends(d, files_dir)[0]
    tree = CxlTree(cxl)  # port numbers and (chassis 0) slots, unique across all PCIe slots with hotplug
    for hb in cxl.host_bridges:
        argv += ["-device", kv("pxb-cxl", bus_nr=hb.bus_nr, bus="pcie.0", id=hb.id, numa_node=hb.node)]
        for rp in hb.root_ports:
            port = tree.ports[rp.id]
            argv += ["-device", kv("cxl-rp", port=port.number, bus=hb.id, id=rp.id, chassis=0, slot=port.slot,
                                    hotplug=rp.hotplug)]
    for sw in cxl.switches:
        if sw.mailbox_cci:
            # The switch CCI is function 1 of the upstream port's slot, as in the CXL
            # maintainers' scripts: cxl-upstream ...,multifunction=on,addr=0.0 then
            # cxl-switch-mailbox-cci,bus=<same port>,addr=0.1,target=<upstream id>.
            argv += ["-device", kv("cxl-upstream", port=sw.port, bus=sw.upstream, id=sw.id, sn=sw.serial,
                                    multifunction=True, addr="0.0")]
            argv += ["-device", kv("cxl-switch-mailbox-cci", bus=sw.upstream, addr="0.1", target=sw.id, id=sw.mailbox_cci)]
        else:
            argv += ["-device", kv("cxl-upstream", port=sw.port, bus=sw.upstream, id=sw.id, sn=sw.serial)]
        for dp in sw.downstream_ports:
            port = tree.ports[dp.id]
            argv += ["-device", kv("cxl-downstream", port=port.number, bus=sw.id, id=dp.id, chassis=0, slot=port.slot,
                                    hotplug=dp.hotplug)]
    for d in cxl.devices:
        props = _device_backends(d, files_dir)[1]
        argv += ["-device", kv("cxl-type3", bus=d.port, **{k.replace("-", "__"): v for k, v in props.items()}, id=d.id, sn=device_serial(d))]
    # All windows in one -M: QEMU rejects cxl-fmw.* split over several options
    # ("Parameters 'cxl-fmw.*' used inconsistently").
    parts = []
    for i, w in enumerate(cxl.windows):
        parts += [f"cxl-fmw.{i}.targets.{j}={tg}" for j, tg in enumerate(w.targets)]
        parts.append(f"cxl-fmw.{i}.size={format_size(w.size)}")
        parts.append(f"cxl-fmw.{i}.interleave-granularity={_gran(w.granularity)}")
    if parts:
        argv += ["-M", ",".join(parts)]
    for g in cxl.generic_ports:
        argv += ["-object", kv("acpi-generic-port", id=g.id, pci__bus=g.host_bridge, node=g.node)]
    return argv


def _gran(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 else str(n)


def kernel_cmdline(t: Topology) -> str:
    """Kernel parameters the topology itself asks for (private nodes, provisioned ranges, extra cmdline)."""
    parts = []
    for pn in t.guest.private_nodes:
        parts.append(f"private_node={pn.node}" + (f",{pn.features:#x}" if pn.features is not None else ""))
    parts += provision_params(t)
    if t.machine.kernel_cmdline:
        parts.append(t.machine.kernel_cmdline)
    return " ".join(parts)
