"""Kernel selftests as pytest items: KTAP scripts and kselftest binaries run in the session's guests.

Two ways in:

* ``pytest --ktap-dir DIR`` (repeatable): every test of DIR (its executable files,
  or an installed kselftest tree's ``kselftest-list.txt``) becomes an item;
* any executable ``ktap_*.sh`` file pytest meets while collecting becomes an item.

Each item runs its test in the VM of its topology (the same pool the ``vm``
fixture uses): ``--ktap-topology`` (default ``numa-basic``), or a line
``# numa-harness: topology=NAME`` near the top of a script. The directory goes
to the guest once per VM. The per-test limit is ``--ktap-timeout`` (300 s, as
kselftest). Exit 4 skips the item with its reason; a failure shows the test's
output. Every KTAP result line is also reported to pytest as a result of its
own (``ITEM::case/subcase``), so skips carry their reasons and failures their
diagnostics, in the terminal and in JUnit XML.

The guest's page-moving knobs are left as the kernel set them (selftests
expect the kernel's defaults, e.g. THP for the THP cases), not the ``vm``
fixture's baseline.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.selftest.ktap import KtapResult
from harness.selftest.run import DEFAULT_TIMEOUT, Outcome, Suite, case_results, discover, run_one, send

DEFAULT_TOPOLOGY = "numa-basic"
TOPOLOGY_LINE = re.compile(r"^#\s*numa-harness:\s*topology\s*=\s*(\S+)", re.M)
_SENT = pytest.StashKey[dict[tuple[int, Path], str]]()
_COUNTER = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("numa-harness")
    g.addoption("--ktap-dir", dest="nh_ktap_dirs", action="append", default=[], metavar="DIR",
                help="run this directory's kernel selftests (KTAP scripts or a built kselftest target) in a guest")
    g.addoption("--ktap-topology", dest="nh_ktap_topology", default=DEFAULT_TOPOLOGY, metavar="NAME",
                help=f"topology KTAP tests run on unless a script names one (default {DEFAULT_TOPOLOGY})")
    g.addoption("--ktap-timeout", dest="nh_ktap_timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                help=f"seconds each kernel selftest may take (default {DEFAULT_TIMEOUT})")


_DIRS = pytest.StashKey[dict[Path, Suite]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ktap: a kernel selftest (KTAP script or kselftest) run in a guest")
    dirs: dict[Path, Suite] = {}
    for d in config.option.nh_ktap_dirs:
        try:
            suite = discover(Path(d))
        except HarnessError as e:
            raise pytest.UsageError(f"--ktap-dir {d}: {e}") from e
        dirs[suite.root] = suite
        if str(suite.root) not in config.args:
            config.args.append(str(suite.root))  # collected like a path on the command line
    config.stash[_DIRS] = dirs


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A directory named with --ktap-dir is collected even where a conftest ignores its parent."""
    for root in config.stash.get(_DIRS, {}):
        if collection_path.is_relative_to(root) or root.is_relative_to(collection_path):
            return False  # the directory, what is in it, and the way down to it
    return None


def script_topology(path: Path) -> str | None:
    """The ``# numa-harness: topology=NAME`` of a script, if it has one in its first 4 KiB."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    m = TOPOLOGY_LINE.search(head)
    return m.group(1) if m else None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    for root, suite in parent.config.stash.get(_DIRS, {}).items():
        if file_path.is_relative_to(root) and str(file_path.relative_to(root)) in suite.tests:
            return KtapFile.from_parent(parent, path=file_path, suite=suite, test=str(file_path.relative_to(root)))
    if file_path.name.startswith("ktap_") and file_path.suffix == ".sh" and _executable(file_path):
        return KtapFile.from_parent(parent, path=file_path, suite=Suite(file_path.parent, (file_path.name,)),
                                    test=file_path.name)
    return None


class KtapFile(pytest.File):
    """One test file: a script or a kselftest binary of a suite directory."""

    def __init__(self, *, suite: Suite, test: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.suite = suite
        self.test = test

    def collect(self) -> list[pytest.Item]:
        return [KtapItem.from_parent(self, name=self.path.name, suite=self.suite, test=self.test)]


class KtapFailure(Exception):
    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


class KtapItem(pytest.Item):
    """One kernel selftest: a script or a kselftest binary, run in the guest."""

    def __init__(self, *, suite: Suite, test: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.suite = suite
        self.test = test
        script = suite.root / test
        self.topology = script_topology(script) or self.config.option.nh_ktap_topology
        self.add_marker(pytest.mark.topology(self.topology))
        self.add_marker(pytest.mark.ktap)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.suite.root / self.test, 0, f"{self.suite.name}/{self.test}"

    def runtest(self) -> None:
        from harness.plugin.hooks import MACHINE, MARK, PROBLEMS_BEFORE, pool

        try:
            m = pool(self.config).machine(self.topology, self.suite.root)
        except HarnessError as e:
            pytest.fail(f"numa-harness: {e}" + (f"\n{e.detail}" if e.detail else ""), pytrace=False)
        sent = self.config.stash.setdefault(_SENT, {})
        key = (id(m.vm), self.suite.root)
        if key not in sent:
            try:
                sent[key] = send(m, self.suite)
            except HarnessError as e:
                pytest.fail(f"numa-harness: {e}", pytrace=False)
        mark = f"numa-harness: ktap begin {next(_COUNTER)} {self.nodeid}"
        m.run(f"echo {_quote(mark)} > /dev/kmsg", timeout=30, check=False)
        self.stash[MACHINE] = m
        self.stash[MARK] = mark
        self.stash[PROBLEMS_BEFORE] = (len(m.problems()), len(m.vm.oom_kills()))
        o = run_one(m, self.suite, sent[key], self.test, self.config.option.nh_ktap_timeout)
        self.user_properties.append(("ktap_exit_status", o.exit_status))
        self._report_cases(o)
        if o.status == "skip":
            raise pytest.skip.Exception(o.reason, _use_item_location=True)
        if o.status == "fail":
            raise KtapFailure(o)

    def _report_cases(self, o: Outcome) -> None:
        """Each KTAP result line as a pytest result of its own."""
        for path, r in case_results(o):
            outcome, longrepr = _case_outcome(r, self.suite.root / self.test)
            where = (self.location[0], self.location[1], f"{self.location[2]}::{path}")
            rep = pytest.TestReport(nodeid=f"{self.nodeid}::{path}", location=where,
                                    keywords={"ktap": 1, self.topology: 1}, outcome=outcome,  # type: ignore[arg-type]
                                    longrepr=longrepr, when="call", sections=[], duration=0.0)
            self.ihook.pytest_runtest_logreport(report=rep)
            # keep the terminal's [NN%] about items: a case is not one of the collected items
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            reported = getattr(tr, "_progress_nodeids_reported", None)
            if isinstance(reported, set):
                reported.discard(rep.id)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, KtapFailure):
            o = excinfo.value.outcome
            tail = "\n".join(o.output.rstrip("\n").splitlines()[-60:]) or "(no output)"
            return (f"{self.suite.name}/{self.test}: {o.reason} (exit status {o.exit_status}, {o.seconds:.0f} s)\n"
                    f"--- its output (last 60 lines) ---\n{tail}")
        return str(super().repr_failure(excinfo))


def _case_outcome(r: KtapResult, script: Path) -> tuple[str, Any]:
    s = r.status
    if s == "skip":
        return "skipped", (str(script), 0, f"Skipped: {r.reason or 'SKIP'}")
    if s in ("fail", "xpass", "error"):
        diag = "\n".join(r.diagnostics[-20:])
        head = f"not ok {r.number} {r.name}" + (f" # {r.directive} {r.reason}".rstrip() if r.directive else "")
        return "failed", head + (f"\n{diag}" if diag else "")
    return "passed", None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
