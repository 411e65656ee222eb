"""Page migration with move_pages(2) and migrate_pages(2): to and from a memory-only node and a
CXL node, per-page statuses, data intact. Stock kernel.

The programs checksum their buffer before and after, and query where every page is
with move_pages(nodes=NULL) before and after, so "moved" means the kernel reports
each page on the target node, not only that the syscall returned 0.
CXL memory under TCG is emulated through MMIO (a few MB/s), so CXL cases move 2 MiB.
"""

from __future__ import annotations

import pytest

from harness.guest import workloads

MIB = 256


@pytest.mark.topology("memory-only")
def test_move_pages_to_the_memory_only_node_and_back(guest):
    """Before: all on node 0 (so "after: all on node 1" is a change, not a given)."""
    r = guest.move(8, to=1, from_node=0)
    assert r.ok
    assert r.before.on(0) == 8 * MIB
    assert r.status.on(1) == 8 * MIB and not r.status.errors
    assert r.not_migrated == 0
    assert r.after.on(1) == 8 * MIB
    assert r.checksum_match
    back = guest.move(8, to=0, from_node=1)
    assert back.before.on(1) == 8 * MIB and back.after.on(0) == 8 * MIB and back.checksum_match


@pytest.mark.topology("memory-only")
@pytest.mark.guest_state(thp="madvise")
def test_move_pages_with_thp_reports_ebusy_per_huge_page_yet_moves_them(guest):
    """With THP (the program madvises MADV_HUGEPAGE; the baseline's THP=never would refuse
    that) move_pages reports one -EBUSY status per 2 MiB huge page, yet the query after
    shows every page on the target: what a test must not mistake for a failure."""
    r = guest.move(8, to=1, from_node=0, thp="on")
    assert r.ok and r.checksum_match
    assert r.after.on(1) == 8 * MIB
    assert r.status.errors.get("EBUSY", 0) == 4  # 8 MiB = four 2 MiB huge pages


@pytest.mark.topology("memory-only")
def test_migrate_pages_moves_a_running_process(guest):
    """The child's pages are queried before (all on node 0) and after (all on node 1):
    a migrate_pages that did nothing fails the second query."""
    r = guest.migrate([0], [1], size_mib=8)
    assert r.ok and r.not_migrated == 0
    assert r.pages_before is not None and r.pages_before.on(0) == 8 * MIB
    assert r.pages_after is not None and r.pages_after.on(1) == 8 * MIB
    assert r.numa_maps_after.on(0) == 0
    assert r.checksum_match


@pytest.mark.topology("memory-only")
def test_migrate_pages_of_a_holding_process(vm, guest):
    """migrate_pages of another process (the way numactl's migratepages does it)."""
    held = guest.start(workloads.place(8, hold_until_signal=True))
    assert isinstance(held.report, workloads.PlaceResult)
    assert held.report.placement is not None and held.report.placement.on(0) == 8 * MIB
    r = guest.migrate([0], [1], pid=held.pid)
    guest.stop(held.pid)
    assert r.ok and r.not_migrated == 0
    assert r.numa_maps_before.on(0) >= 8 * MIB
    assert r.numa_maps_after.on(1) >= 8 * MIB and r.numa_maps_after.on(0) == 0


@pytest.mark.topology("topologies/memoryless.yaml")
def test_move_pages_to_a_node_without_memory_fails_per_page(guest):
    """move_pages(2): ENODEV when the target node is online but has no memory (node 1 has
    a CPU, so it is online); the kernel may refuse the whole call or report -ENODEV per
    page, and either way nothing moves. The control (node 0) moves fine."""
    ok = guest.move(1, to=0)
    assert ok.ok and ok.after.on(0) == MIB
    r = guest.move(1, to=1)
    assert r.after.on(0) == MIB  # nothing moved
    assert r.checksum_match
    errors = dict(r.status.errors)
    if r.refusal is not None:
        errors = {r.refusal.error: MIB}
    assert errors == {"ENODEV": MIB}, r


@pytest.mark.topology("cxl-single")
def test_move_pages_to_the_cxl_node_and_back(vm, guest):
    """The CXL region is onlined as node 1 by the topology's guest set-up."""
    node = vm.setup.regions[0].node
    assert node == 1
    r = guest.move(2, to=node, from_node=0)
    assert r.ok and r.after.on(node) == 2 * MIB and r.checksum_match
    back = guest.move(2, to=0, from_node=node)
    assert back.ok and back.before.on(node) == 2 * MIB and back.after.on(0) == 2 * MIB and back.checksum_match


@pytest.mark.topology("cxl-single")
def test_migrate_pages_to_the_cxl_node(vm, guest):
    """As for the memory-only node: the exact query after shows the pages on the CXL node
    (they started on node 0), and the child's checksum is unchanged."""
    node = vm.setup.regions[0].node
    r = guest.migrate([0], [node], size_mib=2)
    assert r.ok and r.not_migrated == 0
    assert r.pages_after is not None and r.pages_after.on(node) == 2 * MIB
    assert r.checksum_match
