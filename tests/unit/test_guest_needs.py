from harness.kernel.needs import guest_needs, unmet_requirements
from harness.topology import load

STOCK_MASKS = {"possible", "online", "has_cpu", "has_memory", "has_normal_memory", "has_generic_initiator"}


def test_private_node_on_stock_kernel_is_reported():
    t = load("private-node").topology
    (msg,) = unmet_requirements(t, STOCK_MASKS)
    assert "private-nodes" in msg and "--kernel" in msg


def test_private_node_on_patched_kernel_is_met():
    assert unmet_requirements(load("private-node").topology, STOCK_MASKS | {"has_public_memory"}) == []


def test_stock_topology_requires_nothing():
    assert unmet_requirements(load("numa-basic").topology, STOCK_MASKS) == []


def test_cxl_regions_need_region_and_kmem_support():
    needs = guest_needs(load("cxl-single").topology)
    assert needs.config["CONFIG_CXL_REGION"] == "y"
    assert needs.config["CONFIG_DEV_DAX_KMEM"] == "m"
    assert needs.modules[0] == "virtio_net" and "kmem" in needs.modules and "cxl_acpi" in needs.modules
    assert "CONFIG_ACPI_HMAT" in guest_needs(load("tiered-3").topology).config
    assert "CONFIG_CXL_PMEM" in guest_needs(load("cxl-pmem").topology).config
