"""harness.guest.workloads: command-line builders and the parsers, on output recorded from a real guest.

``data/guest-programs/*.json`` is the stdout of each program in a memory-only
guest (stock 6.12 kernel, TCG, NUMA balancing off), recorded with the command
lines these builders make; ``*.stderr`` is pressure's per-step progress.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from harness.guest import workloads as w
from harness.guest.protocol import GUEST_TESTS_DIR as GUEST_TESTS_IMAGE_DIR

DATA = Path(__file__).parent / "data" / "guest-programs"


def rec(name: str) -> str:
    return (DATA / f"{name}.json").read_text()


def test_programs_dir_is_where_the_image_puts_them():
    assert w.PROGRAMS_DIR == GUEST_TESTS_IMAGE_DIR


def test_every_recording_parses_to_its_type():
    types = {"place": w.PlaceResult, "move": w.MoveResult, "migrate": w.MigrateResult, "pressure": w.PressureResult}
    files = sorted(DATA.glob("*.json"))
    assert len(files) >= 10
    for f in files:
        r = w.parse(f.read_text())
        assert isinstance(r, types[f.name.split("-")[0]]), f.name


def test_place_bind_recording():
    r = w.parse_place(rec("place-bind1"))
    assert r.ok and r.refusal is None and r.npages == 4096 and r.page_size == 4096 and r.thp == "off"
    assert r.placement == w.PageCounts({1: 4096}, {}, 4096)
    assert r.placement.on(1) == 4096 and r.placement.on(0) == 0 and r.placement.present == 4096
    assert r.policy == w.Policy("bind", "1", "mbind", ())
    assert r.readback == w.Policy("bind", "1", None, (), 0)
    assert r.addr and int(r.addr, 16) % 4096 == 0
    assert set(r.elapsed) == {"map_s", "policy_s", "touch_s", "mlock_s", "query_s"}
    assert r.hold is None


def test_place_pageout_recording():
    """Recorded in the memmap-kmem guest with a zram swap: 4 MiB bound to node 1, then MADV_PAGEOUT."""
    r = w.parse_place(rec("place-pageout-swap"))
    assert r.placement is not None and r.placement.on(1) == 1024
    assert r.madvise is not None and r.madvise.advice == "pageout" and r.madvise.refusal is None
    assert r.madvise.placement == w.PageCounts({}, {"ENOENT": 1024}, 1024)   # swapped out: on no node
    assert w.parse_place(rec("place-bind1")).madvise is None                 # recorded before --madvise


def test_place_interleave_splits_exactly():
    r = w.parse_place(rec("place-interleave"))
    assert r.placement is not None and r.placement.nodes == {0: 512, 1: 512}
    assert r.policy.via == "set_mempolicy"


def test_place_refusal_is_data():
    r = w.parse_place(rec("place-bind-missing-node"))
    assert not r.ok and r.refusal == w.Refusal("mbind", 22, "EINVAL")
    assert r.placement is not None and r.placement.errors == {"ENOENT": 1024} and r.placement.present == 0
    assert isinstance(r.readback, w.Policy) and r.readback.mode == "default"


def test_move_recordings():
    r = w.parse_move(rec("move-0-1"))
    assert r.ok and r.from_node == 0 and r.to_node == 1 and r.not_migrated == 0
    assert r.before.nodes == {0: 2048} and r.status.nodes == {1: 2048} and r.after.nodes == {1: 2048}
    assert r.checksum_match and r.checksum_before == r.checksum_after
    thp = w.parse_move(rec("move-thp-on"))
    # one -EBUSY per 2 MiB THP although every page moved
    assert thp.status.errors == {"EBUSY": 4} and thp.after.nodes == {1: 2048}
    bad = w.parse_move(rec("move-missing-node"))
    assert bad.refusal == w.Refusal("move_pages", 19, "ENODEV") and bad.not_migrated is None
    assert bad.status.total == 0 and bad.after.nodes == {0: 512}


def test_migrate_recordings():
    r = w.parse_migrate(rec("migrate-child-0-1"))
    assert r.ok and r.spawned and r.from_nodes == "0" and r.to_nodes == "1" and r.not_migrated == 0
    assert r.pages_before == w.PageCounts({0: 2048}, {}, 2048)
    assert r.pages_after == w.PageCounts({1: 2048}, {}, 2048)
    assert r.numa_maps_after.on(1) >= 2048 and r.numa_maps_after.on(0) == 0
    assert r.checksum_match is True and r.size_mib == 8
    bad = w.parse_migrate(rec("migrate-missing-node"))
    assert bad.refusal == w.Refusal("migrate_pages", 22, "EINVAL") and bad.pages_after is not None
    assert bad.pages_after.nodes == {0: 512}


def test_pressure_recordings():
    r = w.parse_pressure(rec("pressure-node1"))
    assert r.ok and r.reached and not r.cut_short and r.allocated_mib == 64 and r.target == "node:1"
    assert r.until == "total:64" and r.policy == w.Policy("bind", "1", "mbind", ())
    assert [s.allocated_mib for s in r.steps] == [0, 16, 32, 48, 64]
    assert r.placement.nodes == {1: 16384}
    assert r.steps[0].node_free_mib[1] - r.steps[-1].node_free_mib[1] >= 60
    assert w.parse_pressure_progress((DATA / "pressure-node1.stderr").read_text()) == r.steps
    bad = w.parse_pressure(rec("pressure-cgroup-missing"))
    assert bad.refusal == w.Refusal("cgroup.procs", 2, "ENOENT") and bad.target == "cgroup:/sys/fs/cgroup/none"


@pytest.mark.parametrize("text, why", [
    ("", "0 lines"),
    ('{"program": "place"}\n{"program": "place"}', "2 lines"),
    ("{not json", "invalid JSON"),
    ('["place"]', "no 'program'"),
    ('{"program": "place", "pid": 1}', "lacks or mangles"),
    ('{"program": "nope"}', "unknown guest program"),
])
def test_malformed_output(text, why):
    with pytest.raises(w.WorkloadError, match=why):
        w.parse(text)


def test_parser_checks_the_program():
    with pytest.raises(w.WorkloadError, match="expected output of 'move'"):
        w.parse_move(rec("place-bind1"))


def test_builders():
    d = w.PROGRAMS_DIR
    assert w.place(16, policy="bind", nodes=1) == (
        f"{d}/place --size 16 --kind anon --thp off --policy bind --nodes 1")
    assert shlex.split(w.place(2, policy="interleave", nodes=[0, 1], via="mbind", kind="memfd", thp="on",
                               mlock=True, prefault=True, move=True, strict=True, hold_until_signal=True))[1:] == [
        "--size", "2", "--kind", "memfd", "--thp", "on", "--policy", "interleave", "--nodes", "0,1", "--via",
        "mbind", "--move", "--strict", "--mlock", "--prefault", "--hold-until-signal"]
    assert w.place(1, hold=2.5).endswith("--hold 2.5")
    assert w.move(8, 1, from_node=0, pages=10) == (
        f"{d}/move --size 8 --to 1 --kind anon --thp off --from-node 0 --pages 10")
    assert w.migrate(0, "1-2", size_mib=8) == f"{d}/migrate --from 0 --to 1-2 --size 8 --kind anon --thp off"
    assert w.migrate([0], [1], pid=42) == f"{d}/migrate --from 0 --to 1 --pid 42"
    assert w.pressure("cgroup:/sys/fs/cgroup/my test", "free-below:100", reserve_mib=32, guard=False) == (
        f"{d}/pressure --target 'cgroup:/sys/fs/cgroup/my test' --until free-below:100 --step 16 --thp off "
        "--reserve 32 --no-guard")


@pytest.mark.parametrize("build", [
    lambda: w.place(1, policy="bnd"),
    lambda: w.place(1, kind="disk"),
    lambda: w.place(1, thp="maybe"),
    lambda: w.place(1, via="set_mempolicy", move=True),
    lambda: w.place(1, hold=1, hold_until_signal=True),
    lambda: w.migrate(0, 1),
    lambda: w.migrate(0, 1, pid=3, size_mib=4),
    lambda: w.pressure("disk", "total:1"),
    lambda: w.pressure("machine", "forever"),
])
def test_builder_rejects(build):
    with pytest.raises(w.WorkloadError):
        build()


def test_recorded_json_is_one_line_each():
    for f in DATA.glob("*.json"):
        assert len(f.read_text().strip().splitlines()) == 1
        json.loads(f.read_text())
