"""Every preset that needs no patched kernel boots, and the guest kernel sees the topology.

Right after boot, the guest is compared with the topology itself (SRAT nodes,
CPUs, memory per node, generic initiators, CXL memdevs enumerated). Then the
topology's guest set-up runs (CXL regions created and onlined) and the guest
is compared with the preset's ``expect`` block: nodes with memory, per-node
CPUs and memory, memory-tier grouping.
"""

from __future__ import annotations

import pytest

from harness.boot import boot
from harness.guest.expect import mismatches
from harness.guest.setup import apply_guest_setup
from harness.stats import snapshot
from harness.topology import load, preset_names
from harness.topology.provision import provision_range

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

STOCK_PRESETS = [p for p in preset_names() if not load(p).topology.requires]
# Firmware and the kernel keep some of each node's memory; per-node MemTotal
# falls short of the node's size by up to this much.
TOLERANCE = 0.12


@pytest.mark.parametrize("preset", STOCK_PRESETS)
def test_preset_boots_with_its_nodes(preset):
    # the set-up by hand: the nodes are read before and after it
    with boot(preset, setup=False, baseline=False) as vm:
        t = vm.topology
        g = snapshot(vm, boot_log=False)
        cxl_mems = vm.run("ls /sys/bus/cxl/devices 2>/dev/null | grep -c '^mem' || true", timeout=60).stdout.strip()
        apply_guest_setup(vm, t)
        after = snapshot(vm, boot_log=False)
        vm.check_health()

    # memmap= reserves a provisioned range at boot: the node has only the rest until the guest set-up
    reserved = {pv.node: provision_range(t, pv)[1] for pv in t.guest.provision if pv.via == "memmap-kmem"}
    srat_mem = {n.id for n in t.nodes if n.memory - reserved.get(n.id, 0)}
    cpu_nodes = {n.id for n in t.nodes if n.cpus}
    assert set(g.with_memory) == srat_mem, f"{preset}: guest nodes with memory {tuple(g.with_memory)}"
    assert set(g.masks["has_cpu"]) == cpu_nodes
    for n in t.nodes:
        if n.cpus:
            assert tuple(g.nodes[n.id].cpus) == tuple(n.cpus), f"node {n.id} CPUs"
        size = n.memory - reserved.get(n.id, 0)
        if size:
            got = g.nodes[n.id].mem_total
            assert size * (1 - TOLERANCE) <= got <= size, f"node {n.id}: MemTotal {got} vs {size}"
    gi_nodes = {gi.node for gi in t.generic_initiators}
    if gi_nodes:
        assert gi_nodes <= set(g.masks.get("has_generic_initiator", ())), "generic initiator node not reported"
    devices = len(t.cxl.devices) if t.cxl else 0
    assert int(cxl_mems) == devices, f"{preset}: guest enumerated {cxl_mems} CXL memdevs, topology has {devices}"
    # After guest set-up (CXL regions onlined), the guest matches the preset's expect block.
    assert t.expect is not None, f"{preset} has no expect block"
    assert mismatches(t.expect, after) == []
