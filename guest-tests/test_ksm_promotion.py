"""KSM on a memory-only node, and promotion of hot pages back to the top tier. Stock kernels (6.12, 7.2),
``memory-only`` preset (node 1 is in a lower tier than node 0 by HMAT)."""

from __future__ import annotations

import time

import pytest

from harness.guest import workloads

pytestmark = pytest.mark.topology("memory-only")

MIB = 256
KSM = "/sys/kernel/mm/ksm"


def wait_for(check, timeout: float, interval: float = 1.0):
    """``check()`` until it returns something true, or the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def buffer_pages(snap, addr: str) -> dict[int, int]:
    (m,) = [m for m in snap.numa_maps if m.address == int(addr, 16)]
    return {n: c for n, c in m.pages.items() if c}


@pytest.mark.requires_kconfig("CONFIG_KSM")
def test_ksm_merges_identical_pages_on_the_memory_only_node(vm, guest, stats):
    """8 MiB of identical pages bound to node 1: with KSM running, all 2048 are merged into
    as few stable pages as max_page_sharing allows (2048/256 = 8 on a stock kernel), every
    other page sharing one of them, and the buffer stays on node 1. Control: pages_sharing
    is 0 before KSM runs."""
    held = guest.start(workloads.place(8, policy="bind", nodes=[1], mergeable=True, hold_until_signal=True))
    assert int(vm.run(f"cat {KSM}/pages_sharing").stdout) == 0
    vm.run(f"echo 4096 > {KSM}/pages_to_scan && echo 0 > {KSM}/sleep_millisecs && echo 1 > {KSM}/run")
    try:
        per_page = int(vm.run(f"cat {KSM}/max_page_sharing").stdout)
        stable = -(-8 * MIB // per_page)

        def merged() -> tuple[int, int] | None:
            shared, sharing = map(int, vm.run(f"cat {KSM}/pages_shared {KSM}/pages_sharing").stdout.split())
            return (shared, sharing) if shared + sharing >= 8 * MIB else None

        got = wait_for(merged, 90)
        assert got == (stable, 8 * MIB - stable), f"(pages_shared, pages_sharing) = {got}"
        snap = stats.snapshot(pid=held.pid)
        assert held.report.addr is not None
        assert set(buffer_pages(snap, held.report.addr)) == {1}
    finally:
        vm.run(f"echo 2 > {KSM}/run", check=False)  # unmerge everything, stop KSM
        guest.stop(held.pid)


@pytest.mark.guest_state(numa_balancing=2)
def test_memory_tiering_mode_promotes_hot_pages_back_to_the_top_tier(vm, guest, stats):
    """NUMA balancing mode 2 (memory tiering): pages a task keeps touching on the lower tier
    (node 1) are promoted to node 0. Moved to node 1 first with migratepages, with balancing
    off until they are all there (else promotion races the move: on a loaded host 7.2 had
    brought 478 pages back before the snapshot after migratepages); then, in mode 2, within
    a minute some come back, and pgpromote_success counts them. Control: in the baseline
    (balancing off) the migration tests show pages stay where they were moved."""
    held = guest.start(workloads.place(16, hot=True, hold_until_signal=True))
    addr = held.report.addr
    assert addr is not None
    vm.run("echo 0 > /proc/sys/kernel/numa_balancing")
    vm.run(f"migratepages {held.pid} 0 1", timeout=120)
    before = stats.snapshot(pid=held.pid)
    assert buffer_pages(before, addr).get(1, 0) >= 15 * MIB
    vm.run("echo 2 > /proc/sys/kernel/numa_balancing")  # the state the guest_state marker asked for

    def promoted():
        snap = stats.snapshot(pid=held.pid)
        return snap if buffer_pages(snap, addr).get(0, 0) >= MIB else None

    after = wait_for(promoted, 90, interval=3)
    guest.stop(held.pid)
    assert after, "no page of the hot buffer came back to node 0 within 90 s"
    assert before.delta(after).vm("pgpromote_success") >= MIB
