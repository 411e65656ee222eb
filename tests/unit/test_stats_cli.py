"""``harness stats`` renders a recorded snapshot; the command is registered."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.cli import stats as cli_stats
from harness.cli.main import build_parser
from harness.stats import from_dump

DATA = Path(__file__).parent / "data" / "stats"


def test_stats_command_is_registered():
    args = build_parser().parse_args(["stats", "vm1", "--json", "--pid", "7", "--cgroup", "rec"])
    assert (args.command, args.name, args.json, args.pid, args.cgroup) == ("stats", "vm1", True, 7, "rec")


def test_table_shows_nodes_classes_and_counters(monkeypatch):
    s = from_dump((DATA / "tiered-3.txt").read_text())
    con = Console(record=True, width=200)
    monkeypatch.setattr(cli_stats, "out", con)
    cli_stats.show(s)
    text = con.export_text()
    assert "memory, normal, memory-only, public, user" in text
    assert "393" in text and "has_generic_initiator" in text
    assert str(s.node(1).numa_hit) in text
    assert "0 -> 1 (fallback 1-2)" in text
    assert f"pid {s.pid}:" in text and "N1=" in text
