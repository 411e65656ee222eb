"""Kernel selftests as pytest items: KTAP scripts and kselftest binaries run in the session's guests.

Two ways in:

* ``pytest --nh-ktap-dir DIR`` (repeatable): every test of DIR (its executable files,
  or an installed kselftest tree's ``kselftest-list.txt``) becomes an item;
* any executable ``ktap_*.sh`` file pytest meets while collecting becomes an item.

Each item runs its test in the VM of its topology (the same pool the ``vm``
fixture uses): ``--nh-ktap-topology`` (default ``numa-basic``), or a line
``# numa-harness: topology=NAME`` near the top of a script. The directory goes
to the guest once per VM. The per-test limit is ``--nh-ktap-timeout`` (300 s, as
kselftest). Exit 4 skips the item with its reason; a failure shows the test's
output. Every KTAP result line is also reported as a subtest of its item
(pytest's :class:`pytest.SubtestReport`: ``SUBSKIPPED[case/subcase]``), so skips
carry their reasons and failures their diagnostics in the terminal, each result is a
``ktap case/subcase`` property of the item's JUnit testcase, and it all works under
pytest-xdist (whose workers accept only reports of the item they ran).

``pytest --nh-kunit`` adds KUnit items (:mod:`harness.selftest.kunit`): one per
``--nh-kunit-suite GLOB`` (or one, ``kunit``, for every suite), run on the
``--nh-ktap-topology`` VM. The guest's KUnit results are read once per VM (after
loading the ``--nh-kunit-module`` modules, whose suites run as they load); each
item reports its suites and their cases as subtests (``kunit[GLOB]``
``[suite/case]``) and fails if one of them failed. The items come from a collector the
session collects (:class:`KunitSuites`), like any other. A kernel without
KUnit skips them, naming the option (from the ``.config`` before booting when
it is known).

The guest's page-moving knobs are left as the kernel set them (selftests
expect the kernel's defaults, e.g. THP for the THP cases), not the ``vm``
fixture's baseline.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError, KernelError
from harness.guest.dmesg import mark_command
from harness.plugin import options
from harness.selftest.ktap import KtapResult
from harness.selftest.run import Outcome, Suite, case_results, discover, run_one, send

TOPOLOGY_LINE = re.compile(r"^#\s*numa-harness:\s*topology\s*=\s*(\S+)", re.M)
_SENT = pytest.StashKey[dict[tuple[int, Path], str]]()
_COUNTER = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.register(parser, options.KTAP)


_DIRS = pytest.StashKey[dict[Path, Suite]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ktap: a kernel selftest (KTAP script or kselftest) run in a guest")
    config.addinivalue_line("markers", "kunit: the kernel's KUnit suites, read from a guest")
    options.resolve(config, options.KTAP)
    if (config.option.nh_kunit_suites or config.option.nh_kunit_modules) and not config.option.nh_kunit:
        raise pytest.UsageError("--nh-kunit-suite and --nh-kunit-module go with --nh-kunit")
    dirs: dict[Path, Suite] = {}
    for d in config.option.nh_ktap_dirs:
        try:
            suite = discover(Path(d))
        except HarnessError as e:
            raise pytest.UsageError(f"--nh-ktap-dir {d}: {e}") from None
        dirs[suite.root] = suite
        if str(suite.root) not in config.args:
            config.args.append(str(suite.root))  # collected like a path on the command line
    config.stash[_DIRS] = dirs


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A directory named with --nh-ktap-dir is collected even where a conftest ignores its parent."""
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
        from harness.plugin.hooks import MACHINE, MARK, PROBLEMS_BEFORE, harness_failure, pool

        try:
            m = pool(self.config).machine(self.topology, self.suite.root)
        except HarnessError as e:
            raise harness_failure(e, detail=True) from None
        sent = self.config.stash.setdefault(_SENT, {})
        key = (id(m.vm), self.suite.root)
        if key not in sent:
            try:
                sent[key] = send(m, self.suite)
            except HarnessError as e:
                raise harness_failure(e) from None
        mark = f"ktap begin {next(_COUNTER)} {self.nodeid}"
        m.run(mark_command(mark), timeout=30, check=False)
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
        """Each KTAP result line as a subtest of this item."""
        for path, r in case_results(o):
            _log_result(self, path, *_case_outcome(r, self.suite.root / self.test))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, KtapFailure):
            o = excinfo.value.outcome
            tail = "\n".join(o.output.rstrip("\n").splitlines()[-60:]) or "(no output)"
            return (f"{self.suite.name}/{self.test}: {o.reason} (exit status {o.exit_status}, {o.seconds:.0f} s)\n"
                    f"--- its output (last 60 lines) ---\n{tail}")
        return str(super().repr_failure(excinfo))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """With --nh-kunit, the session collects a :class:`KunitSuites` beside the paths it was given."""
    rep = yield
    if isinstance(collector, pytest.Session) and collector.config.option.nh_kunit and rep.passed:
        rep.result.append(KunitSuites.from_parent(collector, name=KUNIT_COLLECTOR, nodeid=KUNIT_COLLECTOR))
    return rep


KUNIT_COLLECTOR = "kunit-suites"


class KunitSuites(pytest.Collector):
    """The KUnit items: one per ``--nh-kunit-suite GLOB``, or one (``kunit``) for every suite."""

    def collect(self) -> list[pytest.Item]:
        return [KunitItem.from_parent(self, name=name, nodeid=name, glob=g)
                for g in self.config.option.nh_kunit_suites or [None]
                for name in [f"kunit[{g}]" if g else "kunit"]]


_KUNIT = pytest.StashKey[dict[int, Any]]()


class KunitItem(pytest.Item):
    """The KUnit suites matching one glob (or all), read from the guest of ``--nh-ktap-topology``."""

    def __init__(self, *, glob: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.glob = glob
        self.topology = self.config.option.nh_ktap_topology
        self.add_marker(pytest.mark.topology(self.topology))
        self.add_marker(pytest.mark.kunit)
        self.failed: list[Outcome] = []

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.config.rootpath, 0, self.name

    def runtest(self) -> None:
        from harness.plugin.hooks import MACHINE, MARK, PROBLEMS_BEFORE, harness_failure, pool
        from harness.selftest import kunit

        p = pool(self.config)
        try:
            why = kunit.config_problem(p.kernel_config())
        except HarnessError as e:
            raise harness_failure(e) from None
        if why:
            pytest.skip(f"{why}: {kunit.NO_KUNIT_HINT}")
        try:
            m = p.machine(self.topology, self.config.rootpath)
        except HarnessError as e:
            raise harness_failure(e, detail=True) from None
        mark = f"kunit begin {next(_COUNTER)} {self.nodeid}"
        m.run(mark_command(mark), timeout=30, check=False)
        self.stash[MACHINE] = m
        self.stash[MARK] = mark
        self.stash[PROBLEMS_BEFORE] = (len(m.problems()), len(m.vm.oom_kills()))
        runs = self.config.stash.setdefault(_KUNIT, {})
        if id(m.vm) not in runs:  # once per VM: the modules stay loaded, their results in debugfs
            try:
                runs[id(m.vm)] = kunit.read_results(m, p.kernel(), self.config.option.nh_kunit_modules,
                                                    timeout=self.config.option.nh_ktap_timeout)
            except KernelError as e:
                runs[id(m.vm)] = e
            except HarnessError as e:
                raise pytest.fail.Exception(f"numa-harness: KUnit run: {e}", pytrace=False) from None
        got = runs[id(m.vm)]
        if isinstance(got, KernelError):
            pytest.skip(str(got))
        outcomes = kunit.outcomes(got, [self.glob] if self.glob else [], modules=self.config.option.nh_kunit_modules)
        for o in outcomes:
            self._report(o)
        self.failed = [o for o in outcomes if o.status == "fail"]
        if self.failed:
            raise KtapFailure(self.failed[0])
        if outcomes and all(o.status == "skip" for o in outcomes):
            raise pytest.skip.Exception("; ".join(f"{o.test}: {o.reason}" for o in outcomes), _use_item_location=True)

    def _report(self, o: Outcome) -> None:
        """A suite, then each of its cases, as pytest results of their own."""
        where = Path(self.nodeid, o.test)  # what a skip's summary line names
        rows: list[tuple[str, str, Any]] = []
        for path, r in case_results(o):
            rows.append((f"{o.test}/{path}", *_case_outcome(r, where)))
        st = o.status
        suite_repr: Any = None
        if st == "skip":
            suite_repr = (str(where), 0, f"Skipped: {o.reason}")
        elif st == "fail":
            suite_repr = f"{o.test}: {o.reason}"
        rows.append((o.test, {"pass": "passed", "skip": "skipped", "fail": "failed"}[st], suite_repr))
        for name, outcome, longrepr in rows:
            _log_result(self, name, outcome, longrepr)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, KtapFailure):
            parts = []
            for o in self.failed:
                tail = "\n".join(o.output.rstrip("\n").splitlines()[-60:])
                parts.append(f"KUnit {o.test}: {o.reason}" + (f"\n--- its results (last 60 lines) ---\n{tail}"
                                                                if tail else ""))
            return "\n".join(parts)
        return str(super().repr_failure(excinfo))


def _log_result(item: pytest.Item, name: str, outcome: str, longrepr: Any) -> None:
    """Report one KTAP result of ``item`` as a subtest of it (pytest's :class:`pytest.SubtestReport`):
    the item's node id, so the terminal, JUnit XML and pytest-xdist's workers see a report of the
    item they ran; ``name`` is the subtest's description (``SUBSKIPPED[name]``). JUnit folds
    subtests into the item's testcase, so each result is also a property of it, ``ktap NAME``.
    Subtests are built into pytest 9 and later; under pytest 8 the results are only the
    JUnit properties and the item's own outcome."""
    item.user_properties.append((f"ktap {name}", outcome + (f": {_reason(longrepr)}" if longrepr else "")))
    if not hasattr(pytest, "SubtestReport"):  # pytest 8
        return
    from _pytest.subtests import SubtestContext  # what a SubtestReport describes (pytest >= 9)

    sub = pytest.SubtestReport(nodeid=item.nodeid, location=item.location, keywords={k: 1 for k in item.keywords},
                               outcome=outcome, longrepr=longrepr, when="call", sections=[],  # type: ignore[arg-type]
                               duration=0.0, context=SubtestContext(msg=name, kwargs={}))
    capman = item.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        item.ihook.pytest_runtest_logreport(report=sub)


def _reason(longrepr: Any) -> str:
    """A skip's reason or a failure's first line."""
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr).splitlines()[0]


def _case_outcome(r: KtapResult, script: Path) -> tuple[str, Any]:
    s = r.status
    if s == "skip":
        return "skipped", (str(script), 0, f"Skipped: {r.reason or 'SKIP'}")
    if s in ("fail", "xpass", "error"):
        # every line since the previous result: "# " diagnostics and KUnit's unprefixed
        # "Expected X == Y, but" details alike
        diag = "\n".join(ln.strip().removeprefix("#").strip() for ln in r.log[-20:] if ln.strip())
        head = f"not ok {r.number} {r.name}" + (f" # {r.directive} {r.reason}".rstrip() if r.directive else "")
        return "failed", head + (f"\n{diag}" if diag else "")
    return "passed", None
