"""The topology model: what a ``topologies/*.yaml`` file describes.

Plain frozen dataclasses. Field docs here are the single source of the
README's topology reference. Loading is in :mod:`harness.topology.load`,
cross-field checks in :mod:`harness.topology.validate`; nothing here knows
about QEMU's command line, SSH or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.units import Granularity, IdList, Size

from .schema import fld

Accel = Literal["auto", "kvm", "tcg"]
TcgThread = Literal["auto", "single", "multi"]
Backend = Literal["ram", "memfd", "file"]


@dataclass(frozen=True, kw_only=True)
class MachineSettings:
    """The machine as a whole."""

    smp: int = fld("number of vCPUs; every node's cpus must be below this", 2)
    memory: Size | None = fld("boot memory (-m); must equal the sum of the nodes' memory; defaults to that sum", None)
    maxmem: Size | None = fld("-m maxmem= for memory hotplug; needs slots", None)
    slots: int = fld("-m slots= (memory hotplug slots); 0 = none", 0)
    cpu: str = fld("QEMU CPU model; under TCG the harness adds -hypervisor so CXL regions commit on stock kernels", "max")
    accel: Accel = fld("preferred accelerator: auto probes KVM with a real boot and falls back to TCG; tcg runs under "
                       "TCG even where KVM works (CXL data-path topologies: KVM emulates CXL memory on every access "
                       "and can fault), and wins over an --accel auto; the nightly matrix gives such a topology TCG",
                       "auto")
    tcg_thread: TcgThread = fld("TCG threading: auto = one host thread per vCPU unless vCPUs outnumber host cores, "
                                "then single (thread=single); or force single / multi", "auto")
    kernel_cmdline: str = fld("extra kernel command line appended at boot", "")


@dataclass(frozen=True, kw_only=True)
class Node:
    """A NUMA node in the SRAT: CPUs and/or memory."""

    id: int = fld("node id; ids run 0..N-1 with no gaps (QEMU requires it)")
    cpus: IdList | None = fld("vCPUs in this node, e.g. 0-1 or [0, 2]; omit for a memory-only node", None)
    memory: Size = fld("memory in this node; 0 makes a memoryless CPU node", Size(0))
    backend: Backend = fld("host memory backend: ram, memfd (shareable) or file", "ram")
    share: bool = fld("map the backend shared (share=on)", False)
    path: str | None = fld("backing file for backend: file", None)
    initiator: int | None = fld("for a memory-only node: the CPU node that is its HMAT initiator", None)


@dataclass(frozen=True, kw_only=True)
class Distance:
    """One SLIT entry."""

    src: int = fld("source node id")
    dst: int = fld("destination node id")
    value: int = fld("distance, 10 = local, 11..254 remote")


@dataclass(frozen=True, kw_only=True)
class Slit:
    """SLIT distances: a partial matrix; unlisted remote pairs keep QEMU's default (20)."""

    symmetric: bool = fld("also set dst→src to the same value unless listed", True)
    distances: list[Distance] = fld("the listed entries", [])


@dataclass(frozen=True, kw_only=True)
class HmatLink:
    """HMAT latency and bandwidth from one initiator node to one target node."""

    initiator: int = fld("initiator node id (must have CPUs, or a generic initiator)")
    target: int = fld("target node id (must have memory, or be a generic port node)")
    latency: int | None = fld("access latency in nanoseconds", None)
    bandwidth: Size | None = fld("access bandwidth per second, e.g. 20G", None)


@dataclass(frozen=True, kw_only=True)
class HmatCache:
    """A memory-side cache in front of a node's memory."""

    node: int = fld("node whose memory the cache fronts")
    size: Size = fld("cache size")
    level: int = fld("cache level, 1..3", 1)
    associativity: Literal["none", "direct", "complex"] = fld("associativity", "direct")
    policy: Literal["none", "write-back", "write-through"] = fld("write policy", "write-back")
    line: int = fld("cache line size in bytes", 64)


@dataclass(frozen=True, kw_only=True)
class Hmat:
    """HMAT data; present at all implies -machine hmat=on."""

    links: list[HmatLink] = fld("latency/bandwidth entries", [])
    caches: list[HmatCache] = fld("memory-side caches", [])


@dataclass(frozen=True, kw_only=True)
class Port:
    """A CXL root port or switch downstream port."""

    id: str = fld("QEMU device id, referenced by devices[].port and switches[].upstream")
    port: int | None = fld("port number under its parent; defaults to its index", None)
    hotplug: bool | None = fld("whether a device below may be hot-plugged at run time (vm.cxl.remove_device/add_device): "
                               "true passes hotplug=on and allows it, false passes hotplug=off; unset leaves QEMU's "
                               "default (hot-plug capable) and the harness will not unplug there. Root ports only: "
                               "QEMU's switch downstream ports cannot complete an unplug", None)


@dataclass(frozen=True, kw_only=True)
class HostBridge:
    """A CXL host bridge (pxb-cxl) on pcie.0."""

    id: str = fld("QEMU device id, referenced by windows[].targets")
    bus_nr: int = fld("first PCI bus number behind the bridge (1..254); bridges need room between them")
    node: int | None = fld("NUMA node the bridge belongs to (numa_node=)", None)
    root_ports: list[Port] = fld("root ports (cxl-rp) on this bridge", [])


@dataclass(frozen=True, kw_only=True)
class Switch:
    """A CXL switch: an upstream port on a root port, downstream ports below it."""

    id: str = fld("QEMU id of the upstream port device (cxl-upstream)")
    upstream: str = fld("root port (or downstream port) the switch is plugged into")
    port: int | None = fld("the upstream port's port number (port=); QEMU's default is 0", None)
    serial: int | None = fld("the upstream port's serial number (sn=)", None)
    mailbox_cci: str | None = fld("QEMU id for a switch mailbox CCI (cxl-switch-mailbox-cci) targeting this switch, "
                                  "placed as function 1 beside the upstream port", None)
    downstream_ports: list[Port] = fld("downstream ports (cxl-downstream)", [])


@dataclass(frozen=True, kw_only=True)
class Type3:
    """A CXL type-3 memory device."""

    id: str = fld("QEMU device id; also the memdev name prefix")
    port: str = fld("root port or switch downstream port the device is plugged into")
    volatile: Size = fld("volatile capacity, a multiple of 256M", Size(0))
    persistent: Size = fld("persistent capacity, a multiple of 256M; needs lsa", Size(0))
    lsa: Size = fld("label storage area size; required with persistent capacity, optional with volatile only", Size(0))
    serial: int | None = fld("device serial number (sn=); a device with persistent capacity and none gets one derived "
                             "from its id (Linux needs a non-zero serial to find a pmem region's namespace again); "
                             "0 is refused on one", None)
    backend: Backend = fld("host backend for the capacities", "ram")
    path: str | None = fld("directory for backend: file (files <id>-vmem.raw, <id>-pmem.raw, <id>-lsa.raw); "
                            "a relative path is under the harness data directory's backing/ ($NUMA_HARNESS_DATA, default ~/.local/share/numa-harness)", None)


@dataclass(frozen=True, kw_only=True)
class Window:
    """A CXL fixed memory window (CFMWS): host physical address space routed to host bridges."""

    targets: list[str] = fld("host bridge ids; their count is the window's interleave ways")
    size: Size = fld("window size; a multiple of 256M times the ways")
    granularity: Granularity = fld("interleave granularity across the targets in bytes: 256, 512, 1K .. 16K", Granularity(256))


@dataclass(frozen=True, kw_only=True)
class GenericPort:
    """acpi-generic-port: ties a host bridge to a NUMA node so HMAT numbers reach CXL memory."""

    id: str = fld("QEMU object id")
    host_bridge: str = fld("host bridge id (pxb-cxl)")
    node: int = fld("node id of the generic port's proximity domain (a node with no CPUs and no memory)")


@dataclass(frozen=True, kw_only=True)
class Cxl:
    """CXL topology; present at all implies -machine cxl=on."""

    host_bridges: list[HostBridge] = fld("host bridges", [])
    switches: list[Switch] = fld("switches", [])
    devices: list[Type3] = fld("type-3 memory devices", [])
    windows: list[Window] = fld("fixed memory windows, in order (window 0 is decoder0.0)", [])
    generic_ports: list[GenericPort] = fld("generic ports", [])


@dataclass(frozen=True, kw_only=True)
class PciDevice:
    """An ordinary PCI device, e.g. an accelerator stand-in for a generic initiator."""

    id: str = fld("QEMU device id")
    driver: str = fld("QEMU device model, e.g. edu or pci-testdev")
    bus: str = fld("PCI bus", "pcie.0")


@dataclass(frozen=True, kw_only=True)
class GenericInitiator:
    """acpi-generic-initiator: makes a PCI device the HMAT initiator of a node."""

    id: str = fld("QEMU object id")
    device: str = fld("pci_devices[].id of the initiating device")
    node: int = fld("node the device initiates from")


@dataclass(frozen=True, kw_only=True)
class Region:
    """A CXL region to create in the guest after boot."""

    window: int = fld("index into cxl.windows (window N is root decoder decoder0.N)")
    devices: list[str] = fld("type-3 device ids, in interleave position order")
    mode: Literal["ram", "pmem"] = fld("ram uses volatile capacity, pmem persistent", "ram")
    ways: int | None = fld("interleave ways; defaults to the number of devices", None)
    granularity: Granularity = fld("region interleave granularity in bytes", Granularity(256))
    size: Size | None = fld("region size; defaults to the devices' whole capacity of that mode", None)
    online: Literal["system-ram", "system-ram-movable", "devdax"] = fld(
        "how to online a ram region: system RAM (normal zone), system RAM in ZONE_MOVABLE, or left as devdax",
        "system-ram")


@dataclass(frozen=True, kw_only=True)
class PrivateNode:
    """A node provisioned private/managed on a patched kernel (kernel command line)."""

    node: int = fld("node id")
    features: int | None = fld("opt-in feature mask (private_node=<nid>,<mask>); omit for the kernel's default", None)


ProvisionVia = Literal["memmap-kmem", "private-module", "dax_test", "cxl-mempolicy", "cxl-compression"]
ProvisionZone = Literal["movable", "normal"]

#: Service opt-ins a provisioned node may be given (the private/managed-node series' per-node
#: services); what the contract checks expect of the node.
SERVICES = ("migration", "mempolicy", "demotion", "reclaim", "compaction", "numa_balancing", "longterm_pin",
            "ksm", "hugetlb", "protect_write")


@dataclass(frozen=True, kw_only=True)
class Provision:
    """A node's memory provisioned after boot by a driver path (the contract checks' targets)."""

    node: int = fld("node id the memory lands on")
    via: ProvisionVia = fld("memmap-kmem: memmap=SIZE!START legacy pmem -> devdax namespace -> kmem (stock kernels); "
                            "private-module: the same devdax namespace bound to the harness's own module, which "
                            "hands it to the private-node series' add_private_memory_driver_managed() (a series "
                            "kernel booted with --kernel-tree); dax_test, cxl-mempolicy, cxl-compression: the "
                            "series author's drivers (skipped with the reason on a kernel without them)")
    size: Size | None = fld("bytes taken from the start of the node's memory (memmap-kmem, private-module, dax_test), "
                            "a multiple of 128M; defaults to the whole node", None)
    device: str | None = fld("cxl.devices[].id bound to the driver (cxl-mempolicy, cxl-compression)", None)
    features: list[str] = fld("services the node opts into (the expectation the contract checks use): "
                              + ", ".join(SERVICES) + "; memmap-kmem gives an ordinary node: leave empty", [])
    cram: bool = fld("private-module: register the node with CRAM (cram_register_private_node), which brings its "
                     "own opt-ins (migration, demotion, numa_balancing, protect_write, reclaim); leave features empty",
                     False)
    zone: ProvisionZone = fld("how memmap-kmem onlines the memory: movable (ZONE_MOVABLE, daxctl's default: user "
                              "pages only, so the node can be offlined and its driver unbound) or normal (the "
                              "kernel's own allocations may land there too)", "movable")


@dataclass(frozen=True, kw_only=True)
class GuestSetup:
    """What to set up in the guest after boot."""

    regions: list[Region] = fld("CXL regions to create and online", [])
    private_nodes: list[PrivateNode] = fld("private/managed nodes (needs a patched kernel)", [])
    provision: list[Provision] = fld("node memory provisioned by a driver path after boot", [])
    demotion: bool | None = fld("write /sys/kernel/mm/numa/demotion_enabled; omit to leave the kernel's default", None)


@dataclass(frozen=True, kw_only=True)
class NodeExpect:
    """What the guest should report for one node."""

    cpus: IdList | None = fld("CPUs the guest should list for the node", None)
    memory: Size | None = fld("MemTotal the guest should report for the node", None)


@dataclass(frozen=True, kw_only=True)
class Expect:
    """What the guest should report, for the live fidelity tests."""

    nodes: int | None = fld("number of online nodes", None)
    node: dict[int, NodeExpect] = fld("per-node expectations by node id", {})
    memory_tolerance: int = fld("allowed shortfall of a node's MemTotal, in percent (firmware and kernel reservations)", 10)
    tiers: list[IdList] | None = fld("memory tier grouping, fastest first, e.g. ['0-1', '2']", None)


@dataclass(frozen=True, kw_only=True)
class Topology:
    """A whole emulated machine."""

    description: str = fld("one line saying what the topology models")
    machine: MachineSettings = fld("machine-wide settings", MachineSettings())
    nodes: list[Node] = fld("NUMA nodes (SRAT)")
    slit: Slit | None = fld("SLIT distances", None)
    hmat: Hmat | None = fld("HMAT latency/bandwidth/caches", None)
    cxl: Cxl | None = fld("CXL topology", None)
    pci_devices: list[PciDevice] = fld("extra PCI devices", [])
    generic_initiators: list[GenericInitiator] = fld("generic initiators", [])
    guest: GuestSetup = fld("guest set-up after boot", GuestSetup())
    expect: Expect | None = fld("what the guest should report", None)
    requires: list[str] = fld("guest kernel features beyond stock, e.g. private-nodes (tests skip on a kernel without them)", [])

    # --- derived facts, used by the generator and the CLI ---------------------
    @property
    def total_memory(self) -> int:
        return sum(n.memory for n in self.nodes)

    def node(self, nid: int) -> Node:
        return next(n for n in self.nodes if n.id == nid)
