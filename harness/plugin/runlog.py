"""The run's record: every test's verdict, diagnostics, timelines and kernel problems, kept as the
reports arrive, for the HTML report (:mod:`.report_html`) and the run summary of kernel problems.

Kernel problems (WARN, oops, BUG, lockdep, hung task: :mod:`harness.vm.problems`) are collected from
every test (those a test expected with ``expect_kernel_problem`` included, marked so) and, at the end,
from the console of every VM still up, outside any test (boot, set-up, between tests). With
``--fail-on-kernel-problems`` an otherwise green run fails when one no test expected was seen.
The per-test data travels on the report (``report.numa_harness``, plain JSON-able data), so it
crosses pytest-xdist's workers as the reports do; the controller writes the page (under xdist the
VMs live in the workers, so problems outside any test are not seen there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # annotations only: the plugin imports this module at every pytest start
    from harness.boot import Machine
    from harness.vm.problems import Problem


#: (machine name, the problems the test saw, the kinds it expected): set by the plugin's call hook.
NEW_PROBLEMS = pytest.StashKey["tuple[str, list[Problem], set[str]]"]()


def problem_entries(machine: str, problems: Iterable[Problem], expected: set[str], test: str | None) -> list[dict]:
    """Plain records of kernel problems (pure)."""
    return [{"machine": machine, "index": p.index, "kind": p.kind, "line": p.line.strip(), "test": test,
             "expected": p.kind in expected, "excerpt": p.excerpt} for p in problems]


def test_extra(item: pytest.Item, timelines: Sequence[Any], sections: Sequence[tuple[str, str]] | None,
               bundle: Path | None) -> dict[str, Any]:
    """What a test's report carries for the run's record (JSON-able)."""
    seen = item.stash.get(NEW_PROBLEMS, None)
    problems = problem_entries(seen[0], seen[1], seen[2], item.nodeid) if seen else []
    return {"timelines": [t.to_json() for t in timelines], "sections": [list(s) for s in sections or []],
            "bundle": str(bundle) if bundle else None, "problems": problems}


class RunLog:
    """A pytest plugin object: collects reports; at the end writes the HTML page and judges problems."""

    def __init__(self, html: str | None, *, fail_on_problems: bool, machines: Callable[[], list[Machine]]) -> None:
        self.html = Path(html).resolve() if html else None
        self.fail_on_problems = fail_on_problems
        self._machines = machines
        self.tests: dict[str, dict[str, Any]] = {}   # label -> record, in the order tests ran
        self.problems: list[dict] = []
        self.outside_checked = False

    # -- collecting --------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        label = report.nodeid
        ctx = getattr(report, "context", None)
        if ctx is not None:  # a subtest (a KTAP/KUnit result): a row of its own
            label = f"{report.nodeid} [{ctx.msg}]"
        rec = self.tests.setdefault(label, {"nodeid": report.nodeid, "label": label, "outcome": "passed",
                                            "duration": 0.0, "properties": [], "longrepr": "",
                                            "timelines": [], "sections": [], "bundle": None})
        rec["duration"] += report.duration
        rec["properties"] = [list(p) for p in report.user_properties] or rec["properties"]
        outcome: str = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        if report.failed and report.when != "call":
            outcome = "error"
        if outcome != "passed" and (rec["outcome"] == "passed" or outcome in ("failed", "error")):
            rec["outcome"] = outcome
            if report.longrepr is not None:
                rec["longrepr"] = str(report.longrepr) if not isinstance(report.longrepr, tuple) \
                    else str(report.longrepr[2])
        extra = getattr(report, "numa_harness", None)
        if isinstance(extra, dict):
            rec["timelines"] += extra.get("timelines", [])
            rec["sections"] = extra.get("sections") or rec["sections"]
            rec["bundle"] = extra.get("bundle") or rec["bundle"]
            self.problems += extra.get("problems", [])

    def outside_problems(self) -> None:
        """Add the problems of the running VMs that no test saw (boot, set-up, between tests)."""
        if self.outside_checked:
            return
        self.outside_checked = True
        seen = {(p["machine"], p["index"]) for p in self.problems}
        for m in self._machines():
            new = [p for p in m.problems() if (m.name, p.index) not in seen]
            self.problems += problem_entries(m.name, new, set(), None)

    def unexpected(self) -> list[dict]:
        return [p for p in self.problems if not p["expected"]]

    # -- the end ----------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before the plugin's own sessionfinish shuts the VMs down
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: its reports reach the controller's log
            return
        self.outside_problems()
        bad = self.unexpected()
        if self.fail_on_problems and bad and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.html is not None:
            from harness.plugin.report_html import render

            self.html.parent.mkdir(parents=True, exist_ok=True)
            self.html.write_text(render(list(self.tests.values()), self.problems,
                                        failed_on_problems=self.fail_on_problems and bool(bad)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.problems:
            terminalreporter.section("numa-harness: kernel problems in this run")
            for p in self.problems:
                where = p["test"] or "outside any test (boot, set-up, between tests)"
                note = " (expected by the test)" if p["expected"] else ""
                terminalreporter.write_line(f"{p['machine']}: {p['kind']}: {p['line']} -- {where}{note}")
            if self.fail_on_problems and self.unexpected():
                terminalreporter.write_line("the run fails on these (--fail-on-kernel-problems)")
        if self.html is not None:
            terminalreporter.write_line(f"numa-harness: HTML report: {self.html}")
