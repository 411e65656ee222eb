"""Memory policies on a CPU node plus a memory-only node (the ``memory-only`` preset), stock kernel.

Every number asserted is one the guest kernel reported: the ``place`` program's
``move_pages`` query of its own buffer, and the node counters (``numastat``) read
before and after in one round trip each. THP is off (the plugin's baseline), so a
page is 4 KiB and counts are exact.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.topology("memory-only")

MIB = 256  # 4 KiB pages per MiB


def test_bind_places_every_page_on_the_bound_node(guest, stats):
    """Control: the same size without a policy lands on node 0 (the CPU's node), so
    the assertion on node 1 would fail if the policy were ignored."""
    free = guest.place(16)
    assert free.placement is not None and free.placement.on(0) == 16 * MIB
    r = guest.place(16, policy="bind", nodes=[1])
    assert r.ok and r.placement is not None
    assert r.placement.on(1) == 16 * MIB and r.placement.on(0) == 0
    assert stats.delta().node(1).numa_hit >= 16 * MIB


def test_interleave_splits_pages_within_one(guest):
    """Control: without the policy all 4096 pages land on node 0 (the bind test's control),
    so an ignored policy fails the within-one assertion by 4096."""
    r = guest.place(16, policy="interleave", nodes=[0, 1])
    assert r.placement is not None
    on0, on1 = r.placement.on(0), r.placement.on(1)
    assert on0 + on1 == 16 * MIB
    assert abs(on0 - on1) <= 1, f"interleave gave {on0}/{on1}"


def test_weighted_interleave_gives_the_set_ratio(vm, guest):
    """Weights 3:1 give 3/4 of the pages on node 0; with the default weights (1:1) the
    same call would split evenly, so the 3:1 assertion fails without the weights."""
    wi = "/sys/kernel/mm/mempolicy/weighted_interleave"
    old = {n: vm.run(f"cat {wi}/node{n}").stdout.strip() for n in (0, 1)}
    try:
        vm.run(f"echo 3 > {wi}/node0 && echo 1 > {wi}/node1")
        r = guest.place(16, policy="weighted-interleave", nodes=[0, 1])
    finally:
        vm.run(f"echo {old[0]} > {wi}/node0; echo {old[1]} > {wi}/node1", check=False)
    assert r.ok, r.refusal
    assert r.placement is not None
    on0, on1 = r.placement.on(0), r.placement.on(1)
    assert on0 + on1 == 16 * MIB
    assert abs(on0 - 3 * on1) <= 4, f"weighted interleave 3:1 gave {on0}:{on1}"


def test_preferred_falls_back_when_the_node_is_full(vm, guest, stats):
    """Fill node 1 to ~24 MiB free, then ask for 64 MiB preferring node 1: most pages go
    to node 0, and each is counted twice by the kernel, as a miss on node 0 (it got a
    page it was not asked for) and as foreign on node 1 (its page went elsewhere): the
    two deltas match. Without the filler the same call puts every page on node 1
    (the bind test shows node 1 takes 16 MiB whole), so the fallback assertion has teeth."""
    held = guest.start(guest_pressure_node1())
    before = stats.snapshot()
    r = guest.place(64, policy="preferred", nodes=[1])
    d = before.delta(stats.snapshot())
    guest.stop(held.pid)
    assert r.placement is not None
    assert r.placement.on(0) >= 32 * MIB, f"expected fallback to node 0, got {r.placement.nodes}"
    assert d.node(0).numa_miss >= r.placement.on(0)
    assert d.node(0).numa_miss == d.node(1).numa_foreign


def guest_pressure_node1() -> str:
    """Hold node 1 nearly full (bound there, 8 MiB steps down to 24 MiB free: above its
    watermarks, so the bound filler is never OOM-killed) until signalled."""
    from harness.guest import workloads

    return workloads.pressure("node:1", "free-below:24", step_mib=8, policy="bind", nodes=[1],
                              hold_until_signal=True)


@pytest.mark.topology("topologies/memoryless.yaml")
def test_bind_to_a_node_without_memory_is_refused_with_einval(guest, stats):
    """mbind(2): EINVAL when none of the nodes in the mask has memory. Node 1 has a CPU
    and no memory; the control (node 0) is accepted by the same call."""
    ok = guest.place(4, policy="bind", nodes=[0])
    assert ok.ok
    r = guest.place(4, policy="bind", nodes=[1])
    assert not r.ok and r.refusal is not None
    assert (r.refusal.call, r.refusal.error) == ("mbind", "EINVAL")
    r = guest.place(4, policy="bind", nodes=[1], via="set_mempolicy")
    assert r.refusal is not None and (r.refusal.call, r.refusal.error) == ("set_mempolicy", "EINVAL")
    assert 1 not in stats.snapshot().masks["has_memory"]
