"""The contract report (markdown a reviewer pastes, JSON) and the compare-isolation rows, from verdicts
and mode results as the live runs produce them."""

from __future__ import annotations

import json

from harness.cli.main import build_parser
from harness.contract.isolation import Comparison, ModeResult
from harness.contract.report import Section, comparison_rows, markdown, to_json
from harness.contract.verdicts import Verdict

V = [Verdict("isolation.anon", "node 1 (control, memory-only (SRAT))", 1, "control", "memory-only (SRAT): ordinary node",
             "xfail", "negative control leaked: hog of 1077 MiB: 32237 pages on node 1 (its numa_miss +33754)",
             {"pages": 32237}),
     Verdict("mempolicy.mbind", "private/managed node (none)", None, "private", "none detected", "skip",
             "no node is private/managed: ... | (stock kernel)")]


def test_markdown_has_a_row_per_verdict_with_numbers_and_escapes_pipes():
    text = markdown([Section("memory-only", "6.12.117+deb12-amd64", [], V),
                     Section("memmap-kmem", "6.12.117+deb12-amd64", ["memmap-kmem node 1: 256 MiB online"], [],
                             error="boot failed")])
    assert "kernel 6.12.117+deb12-amd64" in text
    assert "| an anonymous hog on the normal nodes puts no page on it | node 1 (control, memory-only (SRAT)) |" in text
    assert "32237 pages on node 1" in text and "leaks (expected)" in text
    assert "\\| (stock kernel)" in text                       # a pipe in the reason does not break the table
    assert "#### memmap-kmem (memmap-kmem node 1: 256 MiB online)" in text and "not run: boot failed" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "promise" not in ln]
    assert len(rows) == 2


def test_json_round_trips():
    data = json.loads(json.dumps(to_json([Section("memory-only", "k", [], V)])))
    v = data["sections"][0]["verdicts"][0]
    assert v["outcome"] == "xfail" and v["numbers"] == {"pages": 32237} and v["text"].startswith("an anonymous hog")


def test_comparison_rows():
    c = Comparison(1, "hog", [
        ModeResult("a", "no isolation", True, "held 1076 MiB", 1076, 33000, 34000, 352, {"Slab": 12, "PageTables": 324,
                                                                                        "KernelStack": 16}),
        ModeResult("b", "cpuset", True, "killed by the OOM killer after 944 MiB", 944, None, 0, 0,
                   {"Slab": 0, "PageTables": 0, "KernelStack": 0}, "cpuset.mems=0"),
        ModeResult("d", "private/managed node", False, "no node is private/managed")])
    rows = comparison_rows(c)
    assert rows[0][:6] == ["(a)", "no isolation", "held 1076 MiB", "33000", "+34000", "+352 (+12 / +324 / +16)"]
    assert rows[1][3] == "—" and rows[1][6] == "cpuset.mems=0"
    assert rows[2][2] == "skipped" and rows[2][6].startswith("skipped: no node")
    data = json.loads(json.dumps(c.to_json()))                  # --json prints this
    assert data["node"] == 1 and data["modes"][1]["user_pages"] is None and data["modes"][0]["kernel_parts"]["Slab"] == 12


def test_commands_are_registered():
    p = build_parser()
    a = p.parse_args(["compare-isolation", "memory-only", "--json"])
    assert (a.command, a.topology, a.json) == ("compare-isolation", "memory-only", True)
    a = p.parse_args(["contract-report", "--topology", "memory-only", "--out", "r.md", "--kernel", "bz"])
    assert (a.command, a.topology, a.out, a.kernel) == ("contract-report", ["memory-only"], "r.md", "bz")


def test_a_target_whose_every_promise_skips_for_one_reason_is_one_row():
    from harness.contract import PROMISES
    skips = [Verdict(p, "private/managed node (none)", None, "private", "none detected", "skip", "no node is private")
             for p in PROMISES]
    text = markdown([Section("private-node", "k", [], skips)])
    assert f"| all {len(PROMISES)} promises | private/managed node (none) | none detected | no node is private | skip |" \
        in text
