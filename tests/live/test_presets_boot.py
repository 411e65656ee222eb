"""Every preset that needs no patched kernel boots, and the guest kernel sees the topology.

The expected values come from the topology itself (nodes, CPUs, memory per
node, memory-only nodes, generic initiators), and are compared with what the
booted guest kernel reports in sysfs. CXL memory is not onlined here (that is
guest set-up); CXL presets are checked for their SRAT nodes and their CXL
devices being enumerated by the kernel.
"""

from __future__ import annotations

import pytest

from harness.boot import prepare
from harness.guest_nodes import NODES_COMMAND, parse_nodes
from harness.topology import load, preset_names
from harness.vm import VM

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

STOCK_PRESETS = [p for p in preset_names() if not load(p).topology.requires]
# Firmware and the kernel keep some of each node's memory; per-node MemTotal
# falls short of the node's size by up to this much.
TOLERANCE = 0.12


@pytest.mark.parametrize("preset", STOCK_PRESETS)
def test_preset_boots_with_its_nodes(preset):
    p = prepare(preset)
    t = p.loaded.topology
    with VM(p.spec) as vm:  # entering boots it
        g = parse_nodes(vm.run(NODES_COMMAND, timeout=60, check=True).stdout)
        cxl_mems = vm.run("ls /sys/bus/cxl/devices 2>/dev/null | grep -c '^mem' || true", timeout=60).stdout.strip()
        vm.check_health()

    srat_mem = {n.id for n in t.nodes if n.memory}
    cpu_nodes = {n.id for n in t.nodes if n.cpus}
    assert set(g.with_memory) == srat_mem, f"{preset}: guest nodes with memory {tuple(g.with_memory)}"
    assert set(g.masks["has_cpu"]) == cpu_nodes
    for n in t.nodes:
        if n.cpus:
            assert tuple(g.nodes[n.id].cpus) == tuple(n.cpus), f"node {n.id} CPUs"
        if n.memory:
            got = g.nodes[n.id].mem_total
            assert n.memory * (1 - TOLERANCE) <= got <= n.memory, f"node {n.id}: MemTotal {got} vs {n.memory}"
    gi_nodes = {gi.node for gi in t.generic_initiators}
    if gi_nodes:
        assert gi_nodes <= set(g.masks.get("has_generic_initiator", ())), "generic initiator node not reported"
    devices = len(t.cxl.devices) if t.cxl else 0
    assert int(cxl_mems) == devices, f"{preset}: guest enumerated {cxl_mems} CXL memdevs, topology has {devices}"
