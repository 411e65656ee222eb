"""The guest workload programs in a real guest (memory-only preset, stock kernel, TCG).

One boot for the module, NUMA balancing off (it would move pages back behind
the tests' backs), programs run with 4 KiB pages (THP off) so counts are exact.
What the programs report is cross-checked against what the kernel shows
independently: the process's numa_maps line for the buffer and the node's
numastat counters (after ``stat_refresh``) for ``place``; the node's MemFree
for ``pressure``. Negative cases (a node that does not exist) show the checks
can fail: the same programs then report a refusal and leave node 1 untouched.
"""

from __future__ import annotations

import re

import pytest

from harness.boot import boot
from harness.guest import workloads as w

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def vm():
    with boot("memory-only", accel="tcg", baseline=False) as v:
        v.run("echo 0 > /proc/sys/kernel/numa_balancing", timeout=30, check=True)
        assert v.run("cat /proc/sys/kernel/numa_balancing", timeout=30).stdout.strip() == "0"
        yield v
        v.check_health()


def sections(text: str) -> dict[str, str]:
    """Split ``@@NAME`` delimited output into {NAME: body}."""
    out: dict[str, str] = {}
    for chunk in text.split("@@")[1:]:
        name, _, body = chunk.partition("\n")
        out[name.strip()] = body
    return out


def numastat(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in text.splitlines() if ln.strip())}


def held_place_script(command: str) -> str:
    """Run ``place --hold-until-signal`` in the background, and while it holds its pages,
    read node 1's numastat and the process's numa_maps; then end it with SIGTERM."""
    return f"""
echo 1 > /proc/sys/vm/stat_refresh; echo @@BEFORE; cat /sys/devices/system/node/node1/numastat
{command} > /tmp/place.json 2>/tmp/place.err &
pid=$!
i=0; while [ ! -s /tmp/place.json ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo 1 > /proc/sys/vm/stat_refresh; echo @@AFTER; cat /sys/devices/system/node/node1/numastat
echo @@JSON; cat /tmp/place.json
echo @@MAPS; cat /proc/$pid/numa_maps
kill $pid; wait $pid; echo @@RC; echo $?
"""


def test_place_bind_node1(vm):
    r = vm.run(held_place_script(w.place(16, policy="bind", nodes=1, thp="off", hold_until_signal=True)),
               timeout=120, check=True)
    s = sections(r.stdout)
    assert s["RC"].strip() == "0", r.stderr
    res = w.parse_place(s["JSON"])
    assert res.ok and res.npages == 4096
    assert res.placement == w.PageCounts({1: 4096}, {}, 4096)
    assert isinstance(res.readback, w.Policy) and (res.readback.mode, res.readback.nodes) == ("bind", "1")
    # numa_maps, read by the kernel for that process while it held the pages
    line = next(ln for ln in s["MAPS"].splitlines() if ln.split()[0] == res.addr)
    assert re.findall(r"\bN(\d+)=(\d+)", line) == [("1", "4096")], line
    assert "bind:1" in line
    # node 1's own counters: every page was a hit there (a few more may come from page tables etc.)
    hit = numastat(s["AFTER"])["numa_hit"] - numastat(s["BEFORE"])["numa_hit"]
    assert 4096 <= hit < 4096 + 512, hit


def test_place_bind_to_missing_node_is_refused(vm):
    snap = "echo 1 > /proc/sys/vm/stat_refresh; cat /sys/devices/system/node/node1/numastat"
    before = numastat(vm.run(snap, timeout=30, check=True).stdout)
    res = w.run(vm, w.place(16, policy="bind", nodes=2), timeout=120)
    after = numastat(vm.run(snap, timeout=30, check=True).stdout)
    assert isinstance(res, w.PlaceResult)
    assert res.refusal == w.Refusal("mbind", 22, "EINVAL")
    assert res.placement is not None and res.placement.present == 0
    assert after["numa_hit"] - before["numa_hit"] < 512  # nothing like 4096 pages landed on node 1


def test_move_0_to_1_keeps_data(vm):
    res = w.run(vm, w.move(8, 1, from_node=0), timeout=120)
    assert isinstance(res, w.MoveResult)
    assert res.ok and res.npages == 2048 and res.not_migrated == 0
    assert res.before.nodes == {0: 2048}
    assert res.status.nodes == {1: 2048} and res.status.errors == {}
    assert res.after.nodes == {1: 2048}
    assert res.checksum_match and res.checksum_before == res.checksum_after


def test_migrate_child_0_to_1(vm):
    res = w.run(vm, w.migrate(0, 1, size_mib=8), timeout=120)
    assert isinstance(res, w.MigrateResult)
    assert res.ok and res.spawned and res.not_migrated == 0
    assert res.pages_before == w.PageCounts({0: 2048}, {}, 2048)
    assert res.pages_after == w.PageCounts({1: 2048}, {}, 2048)
    # numa_maps (every anonymous mapping of the child) moved as a whole
    assert res.numa_maps_before.on(0) >= 2048 and res.numa_maps_before.on(1) == 0
    assert res.numa_maps_after.on(1) >= 2048 and res.numa_maps_after.on(0) == 0
    assert res.checksum_match is True


def test_pressure_node1_in_steps(vm):
    snap = "echo 1 > /proc/sys/vm/stat_refresh; cat /sys/devices/system/node/node1/numastat"
    cmd = w.pressure("node:1", "total:64", step_mib=16, policy="bind", nodes=1)
    r = vm.run(f"echo @@BEFORE; {snap}; echo @@JSON; {cmd}; echo @@AFTER; {snap}", timeout=180, check=True)
    s = sections(r.stdout)
    res = w.parse_pressure(s["JSON"])
    assert res.ok and res.reached and not res.cut_short and res.allocated_mib == 64
    assert [st.allocated_mib for st in res.steps] == [0, 16, 32, 48, 64]
    assert res.placement.nodes == {1: 16384}
    # node 1's counters: 16384 page allocations hit it
    hit = numastat(s["AFTER"])["numa_hit"] - numastat(s["BEFORE"])["numa_hit"]
    assert 16384 <= hit < 16384 + 512, hit
    # node 1's MemFree (sysfs) fell as the steps went; node 0's did not follow. Not by
    # exactly 64 MiB: pages freed earlier (the move and migrate tests' 8 MiB buffers)
    # wait on per-CPU lists, which MemFree does not count, and are handed out first.
    drop1 = res.steps[0].node_free_mib[1] - res.steps[-1].node_free_mib[1]
    drop0 = res.steps[0].node_free_mib[0] - res.steps[-1].node_free_mib[0]
    assert 40 <= drop1 <= 72, drop1
    assert drop0 < 16, drop0
    assert w.parse_pressure_progress(r.stderr) == res.steps


def test_pressure_guard_stops_before_oom(vm):
    """Filling the whole machine with no stop condition that can be met: the guard must
    end it (cut_short) with the kernel never running the OOM killer."""
    r = vm.run(w.pressure("machine", "free-below:0", step_mib=64), timeout=400, check=True)
    res = w.parse_pressure(r.stdout)
    print(f"pressure guard: {res.allocated_mib} MiB in {res.fill_s:.1f} s, stopped: {res.reason}")
    assert res.ok and res.cut_short and not res.reached, res.reason
    assert res.allocated_mib >= 1024  # it did fill most of the 2 GiB guest
    assert res.placement.present == res.allocated_mib * 256
    dmesg = vm.run("dmesg | grep -ci 'out of memory\\|oom-kill' || true", timeout=30).stdout.strip()
    assert dmesg == "0", "the OOM killer ran"
