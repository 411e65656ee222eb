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

from harness.contract import run as contract_run
from harness.contract.replay import Replay
from harness.contract.run import run_contract
from harness.errors import GuestCommandError
from harness.topology import load

DATA = Path(__file__).parent / "data" / "contract-replay"
RECORDINGS = sorted(p.name.removesuffix(".guest.json.gz") for p in DATA.glob("*.guest.json.gz"))


class FakeClock:
    """time for run.py: sleeping advances it, so polling loops end as they did, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


@pytest.mark.parametrize("name", RECORDINGS)
def test_replayed_verdicts_are_the_recorded_ones(name, monkeypatch):
    monkeypatch.setattr(contract_run, "time", FakeClock())
    replay = Replay.load(DATA / f"{name}.guest.json.gz")
    (section,) = json.loads((DATA / f"{name}.verdicts.json").read_text())["sections"]
    topo = load(replay.about["topology"]).topology
    got = run_contract(replay, topo, roles=replay.about["roles"])
    want = section["verdicts"]
    assert [(v.promise, v.target, v.outcome) for v in got] == [(v["promise"], v["target"], v["outcome"]) for v in want]
    assert [v.observed for v in got] == [v["observed"] for v in want]


def test_there_are_recordings_of_the_stock_kernel_and_the_series():
    assert any(n.startswith("stock-") for n in RECORDINGS)


def test_a_command_the_recording_lacks_is_an_error():
    r = Replay({"answers": [{"command": "cat /proc/1/x", "exit_status": 0, "stdout": "a", "stderr": ""}]})
    assert r.run("cat /proc/42/x").stdout == "a"          # numbers differ between runs: matched without them
    assert r.run("cat /proc/7/x").stdout == "a"           # asked again: the last answer
    with pytest.raises(GuestCommandError, match="no answer"):
        r.run("uname -r")
