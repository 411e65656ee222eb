"""Memory hotplug of a CXL node and hugetlb on a memory-only node. Stock kernels (6.12, 7.2).

Offlining every memory block of the CXL region's node removes the node from
``has_memory`` and from its memory tier; pages in use there are migrated out first
(the process keeps running, its pages now on node 0); onlining restores both.
The region's memory is onlined into ZONE_MOVABLE (``cxl-single-movable``), as daxctl
does by default: only there does the kernel promise that every page can be migrated
away (Documentation/admin-guide/mm/memory-hotplug.rst). In ZONE_NORMAL the kernel may
put its own unmovable pages on the node, and then offlining fails with EBUSY: 7.2 did,
every time tried (a slab page at the node's first pfn; dmesg dumps it "because: unmovable
page"; 7.2's mm/slub.c also allocates a per-node "barn" on the node when it gets memory,
which 6.12's does not), 6.12 did not on this machine.
"""

from __future__ import annotations

import pytest

from harness.guest import workloads

MIB = 256
HUGE_2M = "hugepages/hugepages-2048kB/nr_hugepages"


def blocks_of(vm, node: int) -> list[str]:
    """The memory block directories of ``node`` (sysfs)."""
    out = vm.run(f"cd /sys/devices/system/node/node{node} && ls -d memory[0-9]*").stdout.split()
    return [f"/sys/devices/system/node/node{node}/{b}" for b in out]


@pytest.mark.topology("topologies/cxl-single-movable.yaml")
def test_offlining_the_cxl_node_migrates_its_pages_and_removes_the_node_until_onlined(vm, guest, stats):
    node = vm.setup.regions[0].node
    zones = {vm.run(f"cat {b}/valid_zones").stdout.strip() for b in blocks_of(vm, node)}
    assert zones == {"Movable"}, f"the region's blocks are not (only) in ZONE_MOVABLE: {zones}"
    held = guest.start(workloads.place(2, hold_until_signal=True))
    vm.run(f"migratepages {held.pid} 0 {node}", timeout=120)
    before = stats.snapshot(pid=held.pid)
    assert before.pages_on(node) >= 2 * MIB, "the held pages did not reach the CXL node"
    assert node in before.masks["has_memory"] and any(node in g for g in before.tier_groups())
    blocks = blocks_of(vm, node)
    assert blocks
    for b in blocks:
        vm.run(f"echo offline > {b}/state", timeout=300)
    offline = stats.snapshot(pid=held.pid)
    vm.run(f"kill -0 {held.pid}")  # still alive
    assert offline.pages_on(node) == 0 and offline.pages_on(0) >= 2 * MIB
    assert node not in offline.masks["has_memory"]
    assert not any(node in g for g in offline.tier_groups())
    for b in blocks:
        vm.run(f"echo online > {b}/state", timeout=300)
    online = stats.snapshot()
    assert node in online.masks["has_memory"]
    assert [tuple(g) for g in online.tier_groups()] == [tuple(g) for g in before.tier_groups()]
    assert online.node(node).mem_total == before.node(node).mem_total
    guest.stop(held.pid)


@pytest.mark.topology("memory-only")
def test_hugetlb_pages_are_reserved_on_the_memory_only_node(vm, stats):
    """8 huge pages asked of node 1 are node 1's (its meminfo), not node 0's; node 1's
    free memory falls by most of their 16 MiB. Released afterwards.

    Not all 16 MiB: allocating them drains the per-CPU free lists, whose pages
    MemFree does not count until they come back (CI saw a fall of 14.3 MiB).
    """
    path = f"/sys/devices/system/node/node1/{HUGE_2M}"
    vm.run(f"echo 8 > {path}")
    try:
        snap = stats.snapshot()
        assert int(vm.run(f"cat {path}").stdout) == 8
        assert snap.node(1).meminfo["HugePages_Total"] == 8
        assert snap.node(0).meminfo["HugePages_Total"] == 0
        assert stats.before.delta(snap).node(1).mem_free.change <= -12 * (1 << 20)
    finally:
        vm.run(f"echo 0 > {path}", check=False)
