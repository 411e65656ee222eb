"""``guest.provision``: node memory that a driver path brings up after boot, checked and laid out.

Pure: where a node's memory sits in the guest's physical address space (QEMU lays the nodes'
memory out in node order from address 0, in one piece while the machine's memory stays below
q35's 32-bit PCI hole), the ``memmap=SIZE!START`` reservation each ``memmap-kmem`` / ``dax_test``
entry needs on the kernel command line, and the cross-field checks. Nothing here knows the guest.

``memmap-kmem`` works on stock kernels: the range is reserved as legacy pmem at boot, the guest
set-up turns its namespace into a devdax device and binds it to ``kmem``, which hot-adds it to the
node (the firmware's ACPI tables sit at the top of the last node's memory, so kmem onlines the
whole 128 MiB blocks inside the range: 256 MiB of a 512 MiB node). ``private-module`` takes the
same devdax device to the harness's own module, which makes the node private through the
private-node series' API with the NP_OPS opt-ins ``features`` name (:data:`NP_OPS`, checked
against the rules the kernel enforces) or as a CRAM node (``cram``). The paths that need the
series are skipped, with the reason, on a kernel without them.
"""

from __future__ import annotations

from harness.units import format_size

from .model import SERVICES, Provision, Topology
from .schema import SchemaError

#: x86-64 memory block size: kmem onlines whole blocks.
MEMORY_BLOCK = 128 << 20
#: q35 keeps guest RAM below 4 GiB in one piece up to here (its PCI hole starts at 2.75 GiB).
LOWMEM_LIMIT = 0xB000_0000

NEEDS_SERIES = ("private-module", "dax_test", "cxl-mempolicy", "cxl-compression")
#: Paths that take a memmap=SIZE!START reservation of a memory-only node's memory.
MEMMAP_PATHS = ("memmap-kmem", "private-module", "dax_test")
#: The series' NP_OPS_* opt-ins, in bit order (include/linux/node_private.h of RFC v4): what
#: ``private-module`` accepts as ``features``.
NP_OPS = ("migration", "mempolicy", "demotion", "protect_write", "reclaim", "numa_balancing", "compaction",
          "longterm_pin")
#: What CRAM's own ops opt into (mm/cram.c, RFC v4 23/27: MIGRATION|DEMOTION|NUMA_BALANCING|PROTECT_WRITE|RECLAIM).
CRAM_FEATURES = ("migration", "demotion", "protect_write", "reclaim", "numa_balancing")
#: node_private_set_ops() refuses these combinations (-EINVAL): (needs, because).
NP_OPS_RULES = (("mempolicy", "migration"), ("numa_balancing", "migration"), ("compaction", "migration"))
CXL_DRIVERS = {"cxl-mempolicy": "cxl_mempolicy", "cxl-compression": "cxl_compression"}


def effective_features(p: Provision) -> list[str]:
    """The services a provisioned node opts into: its ``features``, or CRAM's for ``cram: true``."""
    return list(CRAM_FEATURES) if p.cram else list(p.features)


def np_ops_mask(features: list[str]) -> int:
    """``features`` as the series' NP_OPS_* bit mask (the module's ``ops=``)."""
    return sum(1 << NP_OPS.index(f) for f in features if f in NP_OPS)


def node_start(t: Topology, nid: int) -> int:
    """Guest physical address where node ``nid``'s memory starts."""
    return sum(int(n.memory) for n in sorted(t.nodes, key=lambda n: n.id) if n.id < nid)


def provision_range(t: Topology, p: Provision) -> tuple[int, int]:
    """(start, size) of a memmap-reserved provision."""
    size = int(p.size) if p.size is not None else int(t.node(p.node).memory)
    return node_start(t, p.node), size


def online_bytes(t: Topology, p: Provision) -> int:
    """What kmem onlines of a memmap range: the whole memory blocks after the devdax metadata (a
    few MiB at the start) and, for the machine's last node, below the firmware's tables at the top."""
    start, size = provision_range(t, p)
    end = start + size - (1 if start + size < t.total_memory else MEMORY_BLOCK // 1024)
    first = (start // MEMORY_BLOCK + 1) * MEMORY_BLOCK
    last = (end + 1) // MEMORY_BLOCK * MEMORY_BLOCK
    return max(0, last - first)


def _mib(n: int) -> str:
    return f"{n >> 20}M"


def kernel_params(t: Topology) -> list[str]:
    """``memmap=SIZE!START`` for every provision that takes a reserved range."""
    out = []
    for p in t.guest.provision:
        if p.via in MEMMAP_PATHS:
            start, size = provision_range(t, p)
            out.append(f"memmap={_mib(size)}!{_mib(start)}")
    return out


def check_provision(t: Topology) -> None:
    """Cross-field checks of ``guest.provision`` (raises SchemaError naming the YAML path)."""
    seen: dict[int, int] = {}
    ids = {n.id for n in t.nodes}
    for i, p in enumerate(t.guest.provision):
        path = f"guest.provision[{i}]"
        if p.node not in ids:
            raise SchemaError(f"{path}.node", f"node {p.node} does not exist",
                              hint=f"nodes are {', '.join(map(str, sorted(ids)))}")
        if p.node in seen:
            raise SchemaError(f"{path}.node", f"node {p.node} is already provisioned by guest.provision[{seen[p.node]}]")
        seen[p.node] = i
        if p.node in {pn.node for pn in t.guest.private_nodes}:
            raise SchemaError(f"{path}.node", f"node {p.node} is also in guest.private_nodes: pick one path")
        for j, f in enumerate(p.features):
            if f not in SERVICES:
                raise SchemaError(f"{path}.features[{j}]", f"unknown service '{f}'", hint=f"one of {', '.join(SERVICES)}")
        node = t.node(p.node)
        _check_private_module(path, p)
        if p.via in MEMMAP_PATHS:
            if node.cpus:
                raise SchemaError(f"{path}.node", f"node {p.node} has CPUs; {p.via} takes a memory-only node's memory",
                                  hint="provision a node without cpus:")
            if p.device is not None:
                raise SchemaError(f"{path}.device", f"{p.via} takes no device (that is for cxl-mempolicy/cxl-compression)")
            start, size = provision_range(t, p)
            if size <= 0 or size > int(node.memory) or size % MEMORY_BLOCK:
                raise SchemaError(f"{path}.size", f"{format_size(size)} must be a multiple of 128M and at most "
                                  f"node {p.node}'s memory ({format_size(int(node.memory))})")
            if t.total_memory >= LOWMEM_LIMIT:
                raise SchemaError(f"{path}.node", f"the machine's memory ({format_size(t.total_memory)}) crosses q35's "
                                  "PCI hole at 2816M, so the node's addresses are not known here",
                                  hint="keep the nodes' memory below 2816M in all")
            if online_bytes(t, p) <= 0:
                raise SchemaError(f"{path}.size", f"kmem would online nothing of {format_size(size)} here: it onlines "
                                  "whole 128M blocks after the namespace's own metadata, and firmware tables sit at "
                                  "the top of the last node", hint="give it at least 384M")
        else:
            if p.size is not None:
                raise SchemaError(f"{path}.size", f"{p.via} takes the device's capacity; size is for memmap paths")
            devices = [d.id for d in t.cxl.devices] if t.cxl else []
            if p.device is None or p.device not in devices:
                raise SchemaError(f"{path}.device", f"{p.via} needs a cxl.devices id"
                                  + (f" (got '{p.device}')" if p.device else ""),
                                  hint=f"devices are {', '.join(devices)}" if devices else "add a cxl: section")
        if p.via == "memmap-kmem" and p.features:
            raise SchemaError(f"{path}.features", "a stock kmem node is an ordinary node (every service applies); "
                              "it has no opt-ins to record", hint="drop features:, or provision through dax_test")
        if p.via in NEEDS_SERIES and "private-nodes" not in t.requires:
            raise SchemaError("requires", f"guest.provision via {p.via} needs the private-node kernel series; say so",
                              hint="add requires: [private-nodes]")


def _check_private_module(path: str, p: Provision) -> None:
    """``cram`` and the NP_OPS opt-ins of a ``private-module`` entry, with the kernel's own rules."""
    if p.cram and p.via != "private-module":
        raise SchemaError(f"{path}.cram", f"cram is a private-module option, not {p.via}'s")
    if p.via != "private-module":
        return
    if p.cram and p.features:
        raise SchemaError(f"{path}.features", "a CRAM node takes CRAM's own opt-ins ("
                          + ", ".join(CRAM_FEATURES) + "); leave features empty")
    for j, f in enumerate(p.features):
        if f not in NP_OPS:
            raise SchemaError(f"{path}.features[{j}]", f"'{f}' is not a node_private_ops flag of the series",
                              hint=f"private-module takes {', '.join(NP_OPS)}")
    for needs_it, needed in NP_OPS_RULES:
        if needs_it in p.features and needed not in p.features:
            raise SchemaError(f"{path}.features", f"{needs_it} needs {needed} (node_private_set_ops refuses "
                              f"NP_OPS_{needs_it.upper()} without NP_OPS_{needed.upper()})",
                              hint=f"add {needed}")
    if "mempolicy" in p.features and "protect_write" in p.features:
        raise SchemaError(f"{path}.features", "mempolicy and protect_write exclude each other "
                          "(node_private_set_ops refuses both)")
