"""Statistics snapshots of a live tiered-3 guest agree with the topology, and a delta across an
allocation bound to node 1 sees exactly that allocation.

How we know the checks can fail: the delta test's numbers before and after are the control —
node 0 and node 2 take the same snapshots and must NOT show the 8192 pages (they move by a few
hundred at most), so a parser reading the wrong node, or a delta that subtracted the wrong way
or treated numa_hit as a level, fails it. The fidelity test compares with numbers written in
the preset, not with anything the parser produced.
"""

from __future__ import annotations

import pytest

from harness.boot import boot
from harness.stats import snapshot
from harness.topology import load

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

PAGES_32M = 32 * 1024 * 1024 // 4096


@pytest.fixture(scope="module")
def vm():
    with boot("tiered-3", accel="tcg", baseline=False) as machine:
        yield machine


def test_snapshot_matches_topology(vm):
    t = load("tiered-3").topology
    s = snapshot(vm)
    assert s.refreshed
    assert sorted(s.nodes) == [n.id for n in t.nodes]
    for n in t.nodes:
        got = s.node(n.id)
        assert tuple(got.cpus) == tuple(n.cpus or ()), f"node {n.id} CPUs"
        assert n.memory * 0.88 <= got.mem_total <= n.memory, f"node {n.id} MemTotal {got.mem_total}"
    assert t.slit is not None
    for d in t.slit.distances:
        assert s.distance(d.src, d.dst) == d.value
        assert s.distance(d.dst, d.src) == d.value        # symmetric in the preset
    for n in t.nodes:
        assert s.distance(n.id, n.id) == 10
    assert t.expect is not None and t.expect.tiers is not None
    assert s.tier_groups() == [tuple(g) for g in t.expect.tiers]
    assert t.hmat is not None
    for link in t.hmat.links:
        a = s.hmat[link.target][0]
        assert link.initiator in a.initiators
        assert a.read_latency == a.write_latency == link.latency
        assert link.bandwidth is not None
        assert a.read_bandwidth == a.write_bandwidth == link.bandwidth // (1 << 20)   # kernel: MB/s
    # the kernel's demotion order follows the tiers: 0 -> 1 -> 2
    assert tuple(s.demotion_targets[0].preferred) == (1,)
    assert tuple(s.demotion_targets[1].preferred) == (2,)
    assert tuple(s.demotion_targets[2].preferred) == ()
    assert s.classes.nodes("memory-only") == (1, 2) and s.classes.nodes("cpu") == (0,)


def test_delta_sees_an_allocation_on_node_1(vm):
    # 4 KiB pages so numa_hit counts pages, not THP allocations; balancing off so nothing moves back
    vm.run("echo never > /sys/kernel/mm/transparent_hugepage/enabled; "
           "echo 0 > /proc/sys/kernel/numa_balancing", timeout=60, check=True)
    before = snapshot(vm)
    assert before.thp == "never" and before.numa_balancing == 0
    vm.run("numactl --membind=1 memhog 32M", timeout=300, check=True)
    d = before.delta(snapshot(vm))
    print(d.summary(10))
    assert d.node(1).numa_hit >= PAGES_32M
    assert d.node(0).numa_hit < PAGES_32M // 4
    assert d.node(2).numa_hit < PAGES_32M // 4
    assert d.node(1).numa_miss == 0 and d.node(0).numa_foreign == 0
    assert d.vm("pgalloc_dma32") + d.vm("pgalloc_normal") >= PAGES_32M
