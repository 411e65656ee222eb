"""The guest workload programs, built with their Makefile and run ON THE HOST.

These test the programs' logic (option parsing, the JSON they print, the page
accounting, refusals reported as data), not the guest kernel: the host is a
NUMA machine with at least node 0, so "bind to node 0" must put every page on
node 0, and a node without memory must be refused with an errno name. The
command lines come from :mod:`harness.guest.workloads`' builders, so a builder
and its program cannot drift apart. Live guest checks are in
tests/live/test_guest_programs_live.py.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from harness.guest import workloads as w
from harness.resources import guest_programs_dir

PROGRAMS = ("place", "move", "migrate", "pressure", "daxmark", "cmdchan")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    src = guest_programs_dir()
    before = sorted(p.name for p in src.iterdir())
    d = tmp_path_factory.mktemp("guest-programs")
    proc = subprocess.run(["make", "-s", "-C", str(src), f"OUT={d}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in src.iterdir()) == before, "the Makefile wrote into the source folder"
    return d


def host_cmd(out: Path, command: str) -> list[str]:
    """A builder's guest command line with the programs' guest path swapped for the build dir."""
    argv = shlex.split(command)
    assert argv[0].startswith(w.PROGRAMS_DIR + "/")
    return [str(out / Path(argv[0]).name), *argv[1:]]


def run(out: Path, command: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(host_cmd(out, command), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return proc, json.loads(lines[0])


def memoryless_node() -> int:
    """The lowest node id the host has no memory on (maybe not even possible)."""
    have = set()
    for part in Path("/sys/devices/system/node/has_memory").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        have.update(range(int(lo), int(hi or lo) + 1))
    return min(set(range(len(have) + 1)) - have)


def test_build_writes_only_the_programs(out):
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(PROGRAMS)
    for name in PROGRAMS:
        assert os.access(out / name, os.X_OK)
        # static: the guest has no libc of its own to lend them
        assert b"ld-linux" not in (out / name).read_bytes()[:4096]


def test_image_builder_builds_into_a_source_keyed_dir(monkeypatch, tmp_path):
    from harness.image.host import build_guest_programs as _guest_tests

    monkeypatch.setenv("NUMA_HARNESS_CACHE", str(tmp_path))
    built = _guest_tests(None)
    assert sorted(built) == sorted(PROGRAMS)
    dirs = {p.parent for p in built.values()}
    assert len(dirs) == 1
    d = dirs.pop()
    assert d.parent == tmp_path / "guest-programs" and len(d.name) == 16 and int(d.name, 16) >= 0
    # same sources, same dir (no rebuild into a new one)
    assert {p.parent for p in _guest_tests(None).values()} == {d}


@pytest.mark.parametrize("via", ["mbind", "set_mempolicy"])
@pytest.mark.parametrize("kind", w.KINDS)
def test_place_bind_node0_puts_every_page_there(out, kind, via):
    _, obj = run(out, w.place(4, policy="bind", nodes=0, via=via, kind=kind))
    assert set(obj) >= {"program", "pid", "ok", "size_mib", "kind", "thp", "page_size", "npages", "mlock",
                        "prefault", "policy", "readback", "placement", "elapsed", "hold"}
    r = w.parse_place(json.dumps(obj))
    assert r.ok and r.refusal is None
    assert r.npages == 4 * 1024 * 1024 // r.page_size
    assert r.placement is not None and r.placement.nodes == {0: r.npages} and r.placement.errors == {}
    assert r.policy == w.Policy("bind", "0", via, ())
    assert isinstance(r.readback, w.Policy) and (r.readback.mode, r.readback.nodes) == ("bind", "0")


def test_place_bind_to_memoryless_node_is_refused_as_data(out):
    node = memoryless_node()
    r = w.parse_place(json.dumps(run(out, w.place(2, policy="bind", nodes=node))[1]))
    assert not r.ok
    assert r.refusal == w.Refusal("mbind", 22, "EINVAL")
    # nothing was touched after the refusal: every page is absent
    assert r.placement is not None and r.placement.nodes == {} and r.placement.errors == {"ENOENT": r.npages}


def test_place_set_mempolicy_refusal(out):
    r = w.parse_place(json.dumps(run(out, w.place(2, policy="bind", nodes=memoryless_node(), via="set_mempolicy"))[1]))
    assert r.refusal == w.Refusal("set_mempolicy", 22, "EINVAL")
    assert r.placement is None  # refused before anything was mapped


@pytest.mark.parametrize("policy", ["default", "preferred", "preferred-many", "interleave", "weighted-interleave",
                                    "local"])
def test_place_every_policy_reads_back(out, policy):
    nodes = None if policy in ("default", "local") else 0
    r = w.parse_place(json.dumps(run(out, w.place(2, policy=policy, nodes=nodes))[1]))
    assert r.ok, r.refusal
    assert isinstance(r.readback, w.Policy) and r.readback.mode == policy
    assert r.placement is not None and r.placement.on(0) == r.npages


def test_place_prefault_move_strict_and_mlock(out):
    r = w.parse_place(json.dumps(run(out, w.place(2, policy="bind", nodes=0, prefault=True, move=True, strict=True,
                                                  mlock=True))[1]))
    assert r.ok and r.mlock and r.prefault
    assert r.policy.flags == ("strict", "move")
    assert r.placement is not None and r.placement.on(0) == r.npages


def test_place_madvise_cold_reports_a_second_placement(out):
    _, r = run(out, w.place(1, policy="bind", nodes=0, madvise="cold"))
    assert r["madvise"]["advice"] == "cold" and r["madvise"]["ok"]
    assert r["madvise"]["placement"]["pages"] == {"0": 256}   # MADV_COLD deactivates, it moves nothing
    bad = subprocess.run([str(out / "place"), "--size", "1", "--madvise", "sideways"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2 and "--madvise takes cold or pageout" in bad.stderr


def test_place_hold_until_signal_reports_first_then_waits(out):
    proc = subprocess.Popen(host_cmd(out, w.place(4, policy="bind", nodes=0, hold_until_signal=True)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        r = w.parse_place(proc.stdout.readline())
        assert r.pid == proc.pid and r.hold == {"until_signal": True}
        assert proc.poll() is None, "it did not hold"
        # the memory is really held by that process: its numa_maps line agrees with the query
        line = next(ln for ln in Path(f"/proc/{proc.pid}/numa_maps").read_text().splitlines()
                    if ln.split()[0] == r.addr)
        assert f" N0={r.npages} " in line and "bind:0" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_place_hold_seconds(out):
    proc, obj = run(out, w.place(1, hold=0.2))
    assert obj["hold"] == {"seconds": 0.2}


def test_move_to_node0_keeps_data(out):
    r = w.parse_move(json.dumps(run(out, w.move(8, 0, from_node=0))[1]))
    assert r.ok and r.npages == 2048 and r.pages_requested == 2048
    assert r.before.nodes == {0: 2048} and r.status.nodes == {0: 2048} and r.after.nodes == {0: 2048}
    assert r.not_migrated == 0
    assert r.checksum_match and r.checksum_before == r.checksum_after and r.checksum_before != "0" * 16


def test_move_some_pages(out):
    r = w.parse_move(json.dumps(run(out, w.move(2, 0, pages=10, kind="shared"))[1]))
    assert r.ok and r.pages_requested == 10 and r.status.total == 10 and r.status.on(0) == 10
    assert r.after.total == r.npages


def test_move_to_memoryless_node_is_refused(out):
    r = w.parse_move(json.dumps(run(out, w.move(2, memoryless_node()))[1]))
    assert not r.ok and r.refusal is not None and r.refusal.call == "move_pages"
    assert r.refusal.error == "ENODEV"
    assert r.not_migrated is None and r.after.nodes == {0: r.npages} and r.checksum_match


def test_migrate_own_child(out):
    r = w.parse_migrate(json.dumps(run(out, w.migrate(0, 0, size_mib=8))[1]))
    assert r.ok and r.spawned and r.target_pid != r.pid and r.npages == 2048
    assert r.not_migrated == 0
    assert r.pages_before is not None and r.pages_before.nodes == {0: 2048}
    assert r.pages_after is not None and r.pages_after.nodes == {0: 2048}
    # numa_maps sums every anonymous mapping of the child: the buffer plus its heap and stack
    assert r.numa_maps_before.on(0) >= 2048 and r.numa_maps_after.on(0) >= 2048
    assert r.checksum_match is True
    with pytest.raises(ProcessLookupError):
        os.kill(r.target_pid, 0)  # the child is gone


def test_migrate_running_process(out):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        r = w.parse_migrate(json.dumps(run(out, w.migrate("0", "0", pid=sleeper.pid))[1]))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.ok and not r.spawned and r.target_pid == sleeper.pid
    assert r.pages_before is None and r.checksum_match is None
    assert r.numa_maps_before.on(0) > 0


def test_migrate_to_memoryless_node_is_refused(out):
    r = w.parse_migrate(json.dumps(run(out, w.migrate([0], [memoryless_node()], size_mib=2))[1]))
    assert r.refusal == w.Refusal("migrate_pages", 22, "EINVAL") and r.not_migrated is None
    assert r.pages_after is not None and r.pages_after.nodes == {0: 512}


def test_pressure_total_in_steps(out):
    proc, obj = run(out, w.pressure("node:0", "total:40", step_mib=16))
    r = w.parse_pressure(json.dumps(obj))
    assert r.ok and r.reached and not r.cut_short and r.allocated_mib == 40
    assert [s.allocated_mib for s in r.steps] == [0, 16, 32, 40]
    assert r.placement.on(0) == 40 * 256
    assert 0 in r.node_free_mib and r.target == "node:0" and r.until == "total:40"
    assert w.parse_pressure_progress(proc.stderr) == r.steps


def test_pressure_guard_cuts_short(out):
    r = w.parse_pressure(json.dumps(run(out, w.pressure("machine", "total:64", reserve_mib=1 << 30))[1]))
    assert r.ok and r.cut_short and not r.reached and r.allocated_mib == 0
    assert "guard" in r.reason


def test_pressure_free_below_already_reached(out):
    r = w.parse_pressure(json.dumps(run(out, w.pressure("node:0", "free-below:100000000"))[1]))
    assert r.reached and r.allocated_mib == 0 and len(r.steps) == 1


def test_pressure_bad_cgroup_is_refused(out, tmp_path):
    r = w.parse_pressure(json.dumps(run(out, w.pressure(f"cgroup:{tmp_path}/none", "total:16"))[1]))
    assert r.refusal == w.Refusal("cgroup.procs", 2, "ENOENT") and r.allocated_mib == 0


def test_place_mergeable_fills_every_page_alike(out):
    proc, o = run(out, w.place(2, mergeable=True))
    r = w.parse_place(json.dumps(o))
    assert r.ok and r.mergeable and not r.hot
    assert r.placement is not None and r.placement.total == 512


def test_place_hot_keeps_touching_while_it_holds(out):
    proc, o = run(out, w.place(2, hot=True, hold=0.5))
    r = w.parse_place(json.dumps(o))
    assert r.hot and r.hold == {"seconds": 0.5}
    passes = int(proc.stderr.split("after ")[1].split()[0])
    assert passes > 1, proc.stderr
    with pytest.raises(w.WorkloadError, match="hot keeps the pages hot while holding"):
        w.place(2, hot=True)


@pytest.mark.parametrize("argv", [
    ["place"], ["place", "--size", "x"], ["place", "--size", "1", "--policy", "nope"],
    ["place", "--size", "1", "--nodes", "1-0"], ["place", "--size", "1", "--via", "set_mempolicy", "--move"],
    ["place", "--size", "1", "extra"], ["move", "--size", "1"], ["move", "--to", "0"],
    ["migrate", "--from", "0"], ["migrate", "--from", "0", "--to", "1"],
    ["migrate", "--from", "0", "--to", "1", "--pid", "1", "--size", "1"],
    ["pressure", "--target", "node:0"], ["pressure", "--target", "disk", "--until", "total:1"],
    ["pressure", "--target", "machine", "--until", "forever"], ["place", "--bogus"],
    ["place", "--size", "1", "--hot"],
    ["daxmark", "--write", "x"], ["daxmark", "--dev", "/dev/dax0.0"],
    ["daxmark", "--dev", "/dev/dax0.0", "--write", "x", "--read", "1"], ["daxmark", "--dev", "d", "--read", "0"],
])
def test_usage_errors_exit_2(out, argv):
    proc = subprocess.run([str(out / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"usage: {argv[0]} " in proc.stderr


def test_daxmark_writes_and_reads_back_through_a_shared_mapping(out, tmp_path):
    """A 2 MiB file stands in for /dev/daxN.M (no sysfs align for it: the 2 MiB default):
    the text written through the mapping is in the file, and is what a later read returns;
    a fresh (zero) medium reads as empty text."""
    media = tmp_path / "dax"
    media.write_bytes(bytes(2 << 20))
    fresh = json.loads(subprocess.run([str(out / "daxmark"), "--dev", str(media), "--read", "16"],
                                      capture_output=True, text=True, timeout=30, check=True).stdout)
    assert fresh == {"dev": str(media), "map_size": 2 << 20, "text": "", "ok": True}
    wrote = json.loads(subprocess.run([str(out / "daxmark"), "--dev", str(media), "--write", "boot-1 was here"],
                                      capture_output=True, text=True, timeout=30, check=True).stdout)
    assert wrote["ok"] is True and wrote["wrote"] == 15
    assert media.read_bytes()[:16] == b"boot-1 was here\0"
    subprocess.run([str(out / "daxmark"), "--dev", str(media), "--write", "boot-2"], capture_output=True,
                   timeout=30, check=True)
    back = json.loads(subprocess.run([str(out / "daxmark"), "--dev", str(media), "--read", "64"],
                                     capture_output=True, text=True, timeout=30, check=True).stdout)
    assert back["text"] == "boot-2", "a shorter marker ends at its own NUL"


def test_daxmark_reports_a_refused_open(out, tmp_path):
    r = json.loads(subprocess.run([str(out / "daxmark"), "--dev", str(tmp_path / "none"), "--read", "4"],
                                  capture_output=True, text=True, timeout=30, check=True).stdout)
    assert (r["ok"], r["call"], r["error"]) == (False, "open", "ENOENT")
