"""Running matrix cells: one ``pytest`` run per cell, its files in one folder per cell, and a
markdown table of every cell (what the workflow appends to ``$GITHUB_STEP_SUMMARY``).

``OUT/CELL/junit.xml``, ``OUT/CELL/report.html`` (``--nh-html-report``), ``OUT/CELL/artifacts/``
(failure bundles), ``OUT/summary.md``. A cell whose kernel is not on this machine (no built tree, no
series build) is skipped with the reason; it does not fail the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.ci.matrix import Cell
from harness.errors import HarnessError

#: A built kernel tree for the matrix's ``tree`` kernel (``harness kernel build`` prints one).
TREE_ENV = "NUMA_HARNESS_NIGHTLY_TREE"


@dataclass
class Outcome:
    cell: Cell
    status: str = "skipped"     # passed | failed | skipped
    reason: str = ""
    counts: dict[str, int] | None = None
    seconds: float = 0.0
    exit_status: int = 0


def kernel_args(spec: str, env: dict[str, str] | None = None,
                find_series: Callable[[], Path | None] | None = None) -> tuple[list[str] | None, str]:
    """The pytest options that select the cell's kernel, or (None, why it is not here)."""
    env = dict(os.environ) if env is None else env
    if spec == "default":
        return [], ""
    if spec.startswith("debian:"):
        return ["--nh-kernel", spec], ""
    if spec == "tree":
        tree = env.get(TREE_ENV)
        if not tree:
            return None, f"no built kernel tree: set {TREE_ENV} to one (harness kernel build prints its directory)"
        if not Path(tree).is_dir():
            return None, f"{TREE_ENV}={tree} is not a directory"
        return ["--nh-kernel-tree", tree], ""
    if spec == "series":
        from harness.kernel.build import find_series_kernel

        try:
            tree_path = (find_series or find_series_kernel)()
        except HarnessError as e:
            return None, str(e)
        if tree_path is None:
            from harness.kernel.build import SERIES_BUILD_HINT
            return None, f"no private-node series build here: {SERIES_BUILD_HINT}"
        return ["--nh-kernel-tree", str(tree_path)], ""
    return None, f"unknown kernel {spec!r}"


def pytest_argv(cell: Cell, kernel: Sequence[str], out: Path, extra: Sequence[str] = ()) -> list[str]:
    """The cell's pytest command line (pure)."""
    d = out / cell.id
    return [sys.executable, "-m", "pytest", *cell.suite, "--nh-topology", Path(cell.topology).stem, *kernel,
            "--nh-accel", cell.accel, f"--junitxml={d / 'junit.xml'}", "--nh-html-report", str(d / "report.html"),
            "--nh-artifacts", str(d / "artifacts"), "--nh-fail-on-kernel-problems", "-o", "junit_family=xunit1",
            "-o", f"junit_suite_name={cell.id}", *extra]  # xunit1: properties per test case, as record_property wants


def junit_counts(path: Path) -> dict[str, int] | None:
    """tests/failures/errors/skipped from a JUnit file, or None if there is none."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {k: sum(int(s.get(k, "0")) for s in suites) for k in ("tests", "failures", "errors", "skipped")}


def run_cells(cells: Sequence[Cell], out: Path, extra: Sequence[str] = (),
              say: Callable[[str], None] = print) -> list[Outcome]:
    """Run each cell's pytest in turn (output streams through); their outcomes."""
    outcomes = []
    for cell in cells:
        o = Outcome(cell)
        kernel, why = kernel_args(cell.kernel_spec)
        if kernel is None:
            o.reason = why
            say(f"== {cell.id}: skipped: {why}")
            outcomes.append(o)
            continue
        (out / cell.id).mkdir(parents=True, exist_ok=True)
        argv = pytest_argv(cell, kernel, out, extra)
        say(f"== {cell.id}: {cell.topology} on {cell.kernel} ({cell.kernel_spec}), accel {cell.accel} "
            f"({cell.accel_why})")
        t0 = time.monotonic()
        o.exit_status = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
        o.seconds = time.monotonic() - t0
        o.counts = junit_counts(out / cell.id / "junit.xml")
        # 5: pytest collected nothing (the subset has no test of this topology)
        o.status = "passed" if o.exit_status == 0 else "skipped" if o.exit_status == 5 else "failed"
        if o.exit_status == 5:
            o.reason = "no test of this topology in the suite"
        elif o.exit_status not in (0, 1):
            o.reason = f"pytest exited {o.exit_status}"
        outcomes.append(o)
    (out / "summary.md").write_text(summary_markdown(outcomes, out))
    return outcomes


def summary_markdown(outcomes: Sequence[Outcome], out: Path) -> str:
    """One table row per cell (pure)."""
    icon = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
    rows = ["| cell | topology | kernel | accel | result | tests | failed | skipped | time | files |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c, n = o.cell, o.counts or {}
        result = f"{icon[o.status]} {o.status}" + (f": {o.reason}" if o.reason else "")
        files = f"`{out / c.id}`" if o.counts is not None else ""
        rows.append(f"| {c.id} | {c.topology} | {c.kernel} (`{c.kernel_spec}`) | {c.accel} | {result} | "
                    f"{n.get('tests', '')} | {n.get('failures', 0) + n.get('errors', 0) if n else ''} | "
                    f"{n.get('skipped', '')} | {o.seconds:.0f} s | {files} |")
    return "\n".join(["## numa-harness nightly", "", *rows, ""])
