"""What a topology needs from the guest kernel: config options and modules to load.

Pure: topology in, requirements out. The boot path checks the kernel's
.config against :func:`kernel_config_needs` before QEMU starts, and passes
:func:`modules_to_load` to the guest's init.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stats.classes import upstream_masks
from harness.topology.model import Topology

# The harness's own needs, whatever the topology: console, initramfs, the
# virtio network SSH runs over, NUMA.
BASE_CONFIG = {
    "CONFIG_BLK_DEV_INITRD": ("y", "the guest image is an initramfs"),
    "CONFIG_DEVTMPFS": ("y", "the guest init mounts devtmpfs"),
    "CONFIG_SERIAL_8250_CONSOLE": ("y", "the serial console the harness reads"),
    "CONFIG_VIRTIO_PCI": ("y", "the virtio network device SSH runs over"),
    "CONFIG_VIRTIO_NET": ("m", "the virtio network device SSH runs over"),
    "CONFIG_NUMA": ("y", "every topology is a NUMA machine"),
    "CONFIG_ACPI_NUMA": ("y", "NUMA nodes come from the ACPI SRAT"),
}
BASE_MODULES = ("virtio_net",)


@dataclass(frozen=True)
class GuestNeeds:
    config: dict[str, str]      # CONFIG_X -> "y" | "m" ("m" is satisfied by y or m)
    why: dict[str, str]         # CONFIG_X -> reason, for the error message
    modules: tuple[str, ...]    # modprobe order at boot


def guest_needs(t: Topology) -> GuestNeeds:
    cfg = dict(BASE_CONFIG)
    modules: list[str] = list(BASE_MODULES)
    if t.hmat:
        cfg["CONFIG_ACPI_HMAT"] = ("y", "the topology has HMAT data")
    if t.slit or t.hmat:
        cfg["CONFIG_MEMORY_HOTPLUG"] = ("y", "memory tiers and hot-added memory")
    if t.cxl:
        for opt, val in (("CONFIG_CXL_BUS", "m"), ("CONFIG_CXL_PCI", "m"), ("CONFIG_CXL_ACPI", "m"),
                         ("CONFIG_CXL_MEM", "m"), ("CONFIG_CXL_PORT", "m")):
            cfg[opt] = (val, "the topology has CXL devices")
        modules += ["cxl_acpi", "cxl_pci", "cxl_port", "cxl_mem"]
        if any(d.persistent for d in t.cxl.devices):
            cfg["CONFIG_CXL_PMEM"] = ("m", "the topology has persistent CXL memory")
            cfg["CONFIG_LIBNVDIMM"] = ("m", "the topology has persistent CXL memory")
            modules += ["cxl_pmem"]
    if t.guest.regions:
        cfg["CONFIG_CXL_REGION"] = ("y", "guest.regions creates CXL regions")
        cfg["CONFIG_DEV_DAX"] = ("m", "CXL regions surface as DAX devices")
        cfg["CONFIG_DEV_DAX_CXL"] = ("m", "CXL regions surface as DAX devices")
        modules += ["dax_cxl", "device_dax"]
        if any(r.online != "devdax" for r in t.guest.regions):
            cfg["CONFIG_DEV_DAX_KMEM"] = ("m", "guest.regions onlines CXL memory as system RAM")
            cfg["CONFIG_MEMORY_HOTPLUG"] = ("y", "guest.regions onlines CXL memory as system RAM")
            modules += ["kmem"]
        if any(r.mode == "pmem" for r in t.guest.regions):
            modules += ["nd_pmem"]
    if any(p.via == "memmap-kmem" for p in t.guest.provision):
        why = "guest.provision memmap-kmem: memmap= pmem -> devdax -> kmem"
        for opt, val in (("CONFIG_X86_PMEM_LEGACY", "m"), ("CONFIG_LIBNVDIMM", "m"), ("CONFIG_DEV_DAX", "m"),
                         ("CONFIG_DEV_DAX_PMEM", "m"), ("CONFIG_DEV_DAX_KMEM", "m"), ("CONFIG_MEMORY_HOTPLUG", "y")):
            cfg[opt] = (val, why)
        modules += ["nd_e820", "nd_pmem", "dax_pmem", "device_dax", "kmem"]
    if any(p.via == "private-module" for p in t.guest.provision):
        why = "guest.provision private-module: memmap= pmem -> devdax -> the harness's module (series API)"
        for opt, val in (("CONFIG_X86_PMEM_LEGACY", "m"), ("CONFIG_LIBNVDIMM", "m"), ("CONFIG_DEV_DAX", "m"),
                         ("CONFIG_DEV_DAX_PMEM", "m"), ("CONFIG_MEMORY_HOTPLUG", "y"),
                         ("CONFIG_MEMORY_HOTREMOVE", "y"), ("CONFIG_MIGRATION", "y")):
            cfg[opt] = (val, why)
        if any(p.cram for p in t.guest.provision):
            cfg["CONFIG_CRAM"] = ("y", "guest.provision cram: cram_register_private_node (private-node series 23/27)")
        modules += ["nd_e820", "nd_pmem", "dax_pmem", "device_dax"]
    return GuestNeeds(config={k: v[0] for k, v in cfg.items()}, why={k: v[1] for k, v in cfg.items()},
                      modules=tuple(dict.fromkeys(modules)))


def unmet_requirements(t: Topology, node_masks: set[str] | frozenset[str]) -> list[str]:
    """Kernel features the topology ``requires`` that the booted guest shows no sign of."""
    unmet = []
    # The private/managed-nodes series adds node masks beyond upstream's (names still moving, e.g.
    # has_public_memory, has_user_memory), so support is recognised by any mask the node-mask table
    # does not list as upstream.
    if "private-nodes" in t.requires and not (set(node_masks) - upstream_masks()):
        unmet.append("private-nodes: the guest kernel has no node mask beyond upstream's "
                     "(no has_public_memory or similar), so the private_node= parameter was probably ignored; "
                     "boot a kernel with the managed-nodes series (--kernel)")
    return unmet
