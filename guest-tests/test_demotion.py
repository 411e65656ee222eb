"""Demotion to a lower memory tier, driven by reclaim in a memory cgroup. Stock 6.12 and 7.2 kernels.

HMAT puts the ``memory-only`` nodes in two tiers (0 > 1) and the ``tiered-3`` nodes in
three (0 > 1 > 2): the kernel's demotion target of node 0 is node 1, of node 1 node 2. Proactive reclaim
(``memory.reclaim``) of a cgroup's anonymous pages, with no swap, can only demote
them; with demotion off it can do nothing and the write fails with EAGAIN.
Counts are in 4 KiB pages because THP is off (64 MiB is 16,384 pages). Reclaim works
in batches of 32 pages, so it may demote up to one batch more than asked; and it takes
any of the cgroup's anonymous pages, the program's stack and heap included, so where
the buffer went is read from the buffer's own numa_maps line.

Which counter a demotion lands in is the kernel's: ``memory.reclaim`` is proactive reclaim,
which 7.2 counts in ``pgdemote_proactive`` (mm/vmscan.c ``reclaimer_offset()``: ``sc->proactive``;
the counter is named in mm/vmstat.c), and kernels without that counter (6.12) in
``pgdemote_direct``. The tests count the sum of every ``pgdemote_*`` counter the kernel has
(``Delta.demoted``), and check that the one for proactive reclaim, found in the guest, carries it.
"""

from __future__ import annotations

import pytest

from harness.guest import workloads

MIB = 256
BATCH = 32  # SWAP_CLUSTER_MAX: reclaim's unit of work


def hold(guest, cgroup, size_mib: int, **kw) -> tuple[int, int]:
    """A process in ``cgroup`` holding ``size_mib`` on node 0 (its CPU's node): (pid, buffer address)."""
    held = guest.start(cgroup.wrap(workloads.place(size_mib, hold_until_signal=True, **kw)))
    r = held.report
    assert isinstance(r, workloads.PlaceResult) and r.placement is not None and r.addr is not None
    assert r.placement.on(0) == size_mib * MIB
    return held.pid, int(r.addr, 16)


def proactive_reclaim_counter(delta, request) -> str:
    """The reclaim source ``memory.reclaim``'s demotions are counted under on this kernel:
    ``proactive`` where the kernel has ``pgdemote_proactive`` (7.2), else ``direct`` (6.12).
    Said on the test's output and kept as its ``demotion_counter`` property."""
    source = "proactive" if "proactive" in delta.demoted_by else "direct"
    request.node.user_properties.append(("demotion_counter", f"pgdemote_{source}"))
    print(f"this kernel counts memory.reclaim's demotions in pgdemote_{source}: {delta.demoted_by}")
    return source


def buffer_pages(snap, addr: int) -> dict[int, int]:
    """Pages per node of the held buffer (its numa_maps line), from a snapshot taken with pid=."""
    (m,) = [m for m in snap.numa_maps if m.address == addr]
    return {n: c for n, c in m.pages.items() if c}


@pytest.mark.topology("memory-only")
@pytest.mark.guest_state(demotion=True)
def test_reclaim_demotes_exactly_the_requested_pages_to_the_next_tier(vm, guest, stats, cgroup, request):
    """Control: the same reclaim with demotion off moves nothing (next test)."""
    pid, addr = hold(guest, cgroup, 96)
    before = stats.snapshot(pid=pid)
    with stats.timeline(0.2, label="echo 64M > memory.reclaim, demotion on") as tl:  # plotted in the HTML report
        vm.run(f"echo 64M > {cgroup}/memory.reclaim")
    after = stats.snapshot(pid=pid, cgroup=cgroup.path)
    # over the reclaim, DRAM (node 0) gave up what the lower tier (node 1) gained
    assert tl.change_kb(1) >= 48 * 1024 and tl.change_kb(0) < 0, (tl.used_kb(0), tl.used_kb(1))
    d = before.delta(after)
    demoted = d.demoted
    assert 64 * MIB <= demoted <= 64 * MIB + BATCH, d.demoted_by
    assert d.demoted_by[proactive_reclaim_counter(d, request)] == demoted, d.demoted_by
    moved = buffer_pages(after, addr)
    # Reclaim's last batch may overshoot (onto the buffer too); what falls short is the program's stack, heap.
    assert 64 * MIB - 2 * BATCH <= moved.get(1, 0) <= 64 * MIB + BATCH, moved
    assert moved.get(0, 0) + moved.get(1, 0) == 96 * MIB
    assert after.numa_stat is not None
    assert after.numa_stat["anon"][1] == pytest.approx(demoted * 4096, abs=BATCH * 4096)


@pytest.mark.topology("memory-only")
def test_with_demotion_off_reclaim_fails_with_eagain_and_nothing_moves(vm, guest, stats, cgroup):
    """The baseline leaves demotion as the topology set it: off on memory-only."""
    assert stats.before.demotion_enabled is False
    pid, addr = hold(guest, cgroup, 32)
    before = stats.snapshot(pid=pid)
    r = vm.run(f"echo 16M > {cgroup}/memory.reclaim", check=False)
    after = stats.snapshot(pid=pid)
    assert r.exit_status != 0 and "Resource temporarily unavailable" in r.stderr
    d = before.delta(after)
    assert d.demoted == 0, d.demoted_by
    assert buffer_pages(after, addr) == {0: 32 * MIB}


@pytest.mark.topology("tiered-3")
@pytest.mark.guest_state(demotion=True)
def test_demotion_walks_pages_down_the_tiers_one_hop_at_a_time(vm, guest, stats, cgroup, request):
    """Reclaim on three tiers takes pages 0 -> 1 and, in the same or a later round, 1 -> 2
    (the targets the boot log names). No page skips a tier: every demotion is one hop, so
    the kernel's demotion count equals the process's pages on node 1 plus twice those on
    node 2. Up to four rounds: which pages a round picks is reclaim's choice, not where
    they go."""
    pid, addr = hold(guest, cgroup, 48)
    before = stats.snapshot(pid=pid)
    assert 1 in before.demotion_targets[0].preferred and 2 in before.demotion_targets[1].preferred
    for _ in range(4):
        vm.run(f"echo 16M > {cgroup}/memory.reclaim", check=False)
        after = stats.snapshot(pid=pid)
        if buffer_pages(after, addr).get(2, 0):
            break
    buf = buffer_pages(after, addr)
    assert buf.get(2, 0) > 0, f"no page of the buffer reached node 2: {buf}"
    assert sum(buf.values()) == 48 * MIB
    d = before.delta(after)
    demoted = d.demoted
    hops = after.pages_on(1) - before.pages_on(1) + 2 * (after.pages_on(2) - before.pages_on(2))
    assert demoted == pytest.approx(hops, abs=BATCH), d.demoted_by
    assert d.demoted_by[proactive_reclaim_counter(d, request)] == demoted, d.demoted_by


@pytest.mark.topology("memory-only")
@pytest.mark.guest_state(demotion=True)
def test_mlocked_pages_are_not_demoted(vm, guest, stats, cgroup):
    """Control: the unlocked test above demotes under the same reclaim."""
    pid, addr = hold(guest, cgroup, 32, mlock=True)
    vm.run(f"echo 16M > {cgroup}/memory.reclaim", check=False)
    assert buffer_pages(stats.snapshot(pid=pid), addr) == {0: 32 * MIB}
