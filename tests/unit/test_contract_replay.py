"""The contract's verdicts, replayed on real kernels' output without booting them.

Each ``data/contract-replay/NAME.guest.json.gz`` is what a guest kernel answered to every
command of one ``harness contract-report --record`` run; ``NAME.verdicts.json`` is the report
that run wrote. Replaying the conversation through :func:`run_contract` (targets from the node
masks, every parser, every verdict) must give the same verdicts, with the same numbers. The
recordings: stock Debian 6.12 (``memory-only``: the negative control, no private node) and the
private-node series RFC v4 on 7.2.13 (``private-*``: nodes made through the series' API by the
harness's module).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.contract.replay import Replay
from harness.contract.run import run_contract
from harness.errors import GuestCommandError
from harness.topology import load

DATA = Path(__file__).parent / "data" / "contract-replay"
RECORDINGS = sorted(p.name.removesuffix(".guest.json.gz") for p in DATA.glob("*.guest.json.gz"))


@pytest.mark.parametrize("name", RECORDINGS)
def test_replayed_verdicts_are_the_recorded_ones(name):
    replay = Replay.load(DATA / f"{name}.guest.json.gz")
    (section,) = json.loads((DATA / f"{name}.verdicts.json").read_text())["sections"]
    topo = load(replay.about["topology"]).topology
    got = run_contract(replay, topo, roles=replay.about["roles"])
    want = section["verdicts"]
    assert [(v.promise, v.target, v.outcome) for v in got] == [(v["promise"], v["target"], v["outcome"]) for v in want]
    assert [v.observed for v in got] == [v["observed"] for v in want]


def test_there_are_recordings_of_the_stock_kernel_and_the_series():
    assert any(n.startswith("stock-") for n in RECORDINGS)
    assert {"series-v4-private-mempolicy", "series-v4-private-none", "series-v4-private-cram"} <= set(RECORDINGS)


def _verdicts(name: str) -> dict[tuple[str, str], dict]:
    (section,) = json.loads((DATA / f"{name}.verdicts.json").read_text())["sections"]
    return {(v["promise"], v["role"]): v for v in section["verdicts"]}


def test_what_the_series_kernel_did():
    """The series (RFC v4 on 7.2.13) as recorded: the facts the README reports."""
    mp = _verdicts("series-v4-private-mempolicy")
    assert mp[("discovery.mask", "private")]["observed"] == "node 2: has_private_memory"
    assert mp[("isolation.anon", "private")]["numbers"]["pages"] == 0
    assert mp[("isolation.anon", "control")]["outcome"] == "xfail"           # the control beside it leaks
    assert mp[("mempolicy.mbind", "private")]["outcome"] == "pass"
    assert mp[("hotplug.offline", "private")]["outcome"] == "pass"
    none = _verdicts("series-v4-private-none")
    # numactl --interleave=all breaks for every process once a node without mempolicy is private
    assert none[("isolation.interleave", "private")]["outcome"] == "fail"
    assert "Invalid argument" in none[("isolation.interleave", "private")]["observed"]
    # migrate_pages(2) refuses it with ENODEV (the series' node_private_migrate_to), not EINVAL
    assert none[("migration.migrate_pages", "private")]["numbers"]["refused"] == "ENODEV"
    assert none[("mempolicy.mbind", "private")]["numbers"]["refused"] == "EINVAL"
    cram = _verdicts("series-v4-private-cram")
    assert cram[("demotion.target", "private")]["observed"] == "demotion target of node(s) 0"
    anon = cram[("isolation.anon", "private")]
    assert anon["outcome"] == "pass" and anon["numbers"]["pages"] > 0 and anon["numbers"]["demoted"] > 0
    assert anon["numbers"]["numa_miss"] == 0
    assert cram[("discovery.kthreads", "private")]["observed"] == "kswapd1 running, kcompactd1 absent"


def test_a_command_the_recording_lacks_is_an_error():
    r = Replay({"answers": [{"command": "cat /proc/1/x", "exit_status": 0, "stdout": "a", "stderr": ""}]})
    assert r.run("cat /proc/42/x").stdout == "a"          # numbers differ between runs: matched without them
    assert r.run("cat /proc/7/x").stdout == "a"           # asked again: the last answer
    with pytest.raises(GuestCommandError, match="no answer"):
        r.run("uname -r")
