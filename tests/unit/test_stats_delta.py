"""Deltas between two real snapshots of one tiered-3 guest, around
``numactl --membind=1 memhog 32M`` with THP off and NUMA balancing off (8192 pages on node 1).

Recorded by hand with harness.stats.collect on a ``harness up tiered-3`` VM (see the commit).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.stats import Level, StatsError, counter_kind, from_dump, vmstat_kind

DATA = Path(__file__).parent / "data" / "stats"


@pytest.fixture(scope="module")
def delta():
    before = from_dump((DATA / "tiered-3-before-memhog.txt").read_text())
    after = from_dump((DATA / "tiered-3-after-memhog.txt").read_text())
    return before.delta(after)


def test_allocation_on_node_1_counts_every_page(delta):
    assert delta.node(1).numa_hit >= 8192            # 32 MiB of 4 KiB pages, plus memhog's own
    assert delta.node(1).numa_hit < 8192 + 200
    assert delta.node(1).other_node == delta.node(1).numa_hit   # allocated from node 0's CPUs
    assert delta.node(0).numa_hit < 1000               # the shell and memhog's own bookkeeping only
    assert delta.node(2).numa_hit == 0
    assert delta.node(1).numa_miss == 0 and delta.node(0).numa_foreign == 0


def test_event_counter_is_a_difference(delta):
    # the files are read one after another, not atomically: the guest may allocate in between
    assert abs(delta.vm("numa_hit") - sum(delta.node(n).numa_hit for n in (0, 1, 2))) < 50
    assert delta.vm("pgdemote_direct") == 0 and delta.demoted == 0
    assert delta.vm("pgalloc_dma32") >= 8192
    assert delta.node(1).vmstat("numa_hit") == delta.node(1).numa_hit


def test_level_is_before_and_after(delta):
    free = delta.node(1).mem_free
    assert isinstance(free, Level)
    assert free.before == delta.before.node(1).mem_free and free.after == delta.after.node(1).mem_free
    assert free.change == free.after - free.before
    lv = delta.vm_level("nr_free_pages")
    assert abs(lv.change + sum(delta.pages_gained(node=n) for n in (0, 1, 2))) < 200
    assert delta.zone(1, "DMA32", "free").change == delta.node(1).vmstat_level("nr_free_pages").change


def test_pages_gained_is_the_drop_in_free_pages(delta):
    # memhog has exited: what node 1 still lacks sits on per-CPU free lists, outside nr_free_pages
    g = delta.pages_gained(node=1)
    assert g == delta.before.node(1).free_pages - delta.after.node(1).free_pages
    assert 0 < g <= 8192
    assert delta.bytes_gained(1) == g * 4096


def test_asking_a_level_for_an_event_difference_raises(delta):
    with pytest.raises(StatsError, match="level"):
        delta.vm("nr_free_pages")
    with pytest.raises(StatsError, match="level"):
        delta.node(1).vmstat("nr_anon_pages")
    with pytest.raises(StatsError, match="no counter"):
        delta.vm("no_such_counter")


def test_counter_going_down_means_two_boots(delta):
    backwards = delta.after.delta(delta.before)
    with pytest.raises(StatsError, match="not from one boot"):
        _ = backwards.node(1).numa_hit


def test_changed_lists_moved_counters(delta):
    moved = delta.changed()
    assert moved["node1:numastat:numa_hit"] == delta.node(1).numa_hit
    assert "node2:numastat:numa_hit" not in moved
    assert "node 1: numa_hit +" in delta.summary()


@pytest.mark.parametrize("name,kind", [
    ("nr_free_pages", "level"), ("nr_anon_pages", "level"), ("nr_dirty_threshold", "level"),
    ("workingset_nodes", "level"),
    ("nr_dirtied", "event"), ("nr_written", "event"), ("nr_foll_pin_acquired", "event"),
    ("nr_vmscan_write", "event"), ("nr_tlb_remote_flush", "event"),
    ("pgdemote_direct", "event"), ("pgmigrate_success", "event"), ("numa_hit", "event"),
    ("pgalloc_normal", "event"), ("pgpromote_success", "event"), ("thp_fault_alloc", "event"),
    ("workingset_refault_anon", "event"),
])
def test_vmstat_kind_rule(name, kind):
    assert vmstat_kind(name) == kind


def test_every_recorded_counter_has_a_kind(delta):
    """No counter of the recorded 6.12 guest is left without a kind; the sources' rules hold."""
    assert all(counter_kind("vmstat", k) in ("event", "level") for k in delta.after.vm)
    assert counter_kind("numastat", "numa_hit") == "event"
    assert counter_kind("meminfo", "MemFree") == "level"
    with pytest.raises(ValueError):
        counter_kind("nope", "x")


def test_demoted_sums_every_pgdemote_counter_the_kernel_has_with_the_split_by_source(delta):
    """6.12 counts memory.reclaim's demotion in pgdemote_direct; 7.2 in pgdemote_proactive, a
    counter 6.12 lacks. The sum covers whichever counters the snapshots have."""
    from dataclasses import replace
    assert delta.demoted_by == {"direct": 0, "khugepaged": 0, "kswapd": 0}   # recorded on 6.12
    b, a = delta.before, delta.after
    newer_before = replace(b, vm={**b.vm, "pgdemote_proactive": 10})
    newer_after = replace(a, vm={**a.vm, "pgdemote_proactive": 16394, "pgdemote_kswapd": a.vm["pgdemote_kswapd"] + 3})
    d = newer_before.delta(newer_after)
    assert d.demoted_by == {"direct": 0, "khugepaged": 0, "kswapd": 3, "proactive": 16384}
    assert d.demoted == 16387
