"""The plugin's pytest hooks: options, markers, selection by topology, kernel-problem checks, failure reports
(diagnostics read once by :mod:`.failure`, put into the report and JUnit by :mod:`.junit`, kept in a
bundle by :mod:`.bundle`), and the run's record (:mod:`.runlog`: kernel problems, the HTML report)."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from harness.boot import KernelSpec, Machine
from harness.errors import HarnessError
from harness.plugin import bundle, failure, junit
from harness.plugin.pool import PoolOptions, VMPool
from harness.plugin.problems import unexpected_problems
from harness.plugin.runlog import NEW_PROBLEMS, RunLog, test_extra
from harness.plugin.signals import SessionSignals

POOL = pytest.StashKey[VMPool]()
MACHINE = pytest.StashKey[Machine]()
MARK = pytest.StashKey[str]()
PROBLEMS_BEFORE = pytest.StashKey[tuple[int, int]]()
STATS = pytest.StashKey[Any]()
WORKER_NOTES = pytest.StashKey[list[str]]()
SIGNALS = pytest.StashKey[SessionSignals]()
#: Where an xdist worker hands its closing notes (kept VMs) to the controller, which prints them.
NOTES_KEY = "numa_harness_notes"
WORKLOADS = pytest.StashKey[list[dict[str, Any]]]()
RUNLOG = pytest.StashKey[RunLog]()

MARKERS = (
    "topology(ref): run on this numa-harness topology (preset name or YAML path); one VM per topology per session",
    "guest_state(**knobs): guest knobs other than the baseline, e.g. numa_balancing=2, thp='always', demotion=True",
    "requires_kconfig(*options): skip unless the kernel's .config has these options (y or m)",
    "requires_node_mask(*masks): skip unless the guest exposes /sys/devices/system/node/<mask>",
    "expect_kernel_problem(kind, strict=True): the test provokes this kernel report (oom, warning, bug, oops, "
    "call-trace, allocation-failure) on purpose",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("numa-harness", "numa-harness: emulated NUMA/CXL machines")
    g.addoption("--kernel", dest="nh_kernel", metavar="BZIMAGE",
                help="kernel to boot: a bzImage, a build tree, or debian:X.Y (Debian's X.Y kernel, fetched "
                     "and cached) (default: the distribution kernel) "
                     "[$NUMA_HARNESS_KERNEL]")
    g.addoption("--modules", dest="nh_modules", metavar="DIR", help="modules_install root for --kernel")
    g.addoption("--kernel-tree", dest="nh_kernel_tree", metavar="DIR", help="a kernel build tree")
    g.addoption("--kernel-config", dest="nh_kernel_config", metavar="FILE", help="the .config of --kernel")
    g.addoption("--qemu", dest="nh_qemu", metavar="BIN", help="QEMU binary [$NUMA_HARNESS_QEMU]")
    g.addoption("--accel", dest="nh_accel", choices=["auto", "kvm", "tcg"],
                help="accelerator (default: the topology's, normally auto) [$NUMA_HARNESS_ACCEL]")
    g.addoption("--keep-vm-on-failure", dest="nh_keep", action="store_true",
                help="leave a VM that served a failed test running (harness ssh pytest-TOPOLOGY-PID; the run names it)")
    g.addoption("--topology", dest="nh_topology", action="append", metavar="NAME",
                help="run only the tests of this topology (repeatable); -k NAME works too")
    g.addoption("--artifacts", dest="nh_artifacts", metavar="DIR",
                help="where a failed test's bundle goes, one folder per test: console log, dmesg, QEMU argv, "
                     f"topology, .config, statistics, workload output, reproduce.sh (default: {bundle.DEFAULT_DIR} "
                     "under pytest's basetemp)")
    g.addoption("--html-report", dest="nh_html", metavar="PATH",
                help="write one HTML page for the run: per test the verdict, diagnostics and plots of memory per "
                     "node (stats.timeline), and the kernel problems seen across all tests")
    g.addoption("--fail-on-kernel-problems", dest="nh_fail_problems", action="store_true",
                help="fail an otherwise green run when the guest kernel reported a problem (WARN, oops, BUG, "
                     "lockdep, hung task) that no test expected, also outside the tests (boot, set-up)")


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    log = RunLog(config.option.nh_html, fail_on_problems=bool(config.option.nh_fail_problems),
                 machines=lambda: pool(config).machines() if POOL in config.stash else [])
    config.stash[RUNLOG] = log
    config.pluginmanager.register(log, "numa-harness-runlog")


def artifacts_root(config: pytest.Config) -> Path:
    """``--artifacts``, else the default folder under pytest's basetemp."""
    if config.option.nh_artifacts:
        return Path(config.option.nh_artifacts).resolve()
    return config._tmp_path_factory.getbasetemp() / bundle.DEFAULT_DIR  # type: ignore[attr-defined]


def pool(config: pytest.Config) -> VMPool:
    """The session's VM pool (made on first use)."""
    p = config.stash.get(POOL, None)
    if p is None:
        o = config.option
        kernel = KernelSpec.from_env(o.nh_kernel, o.nh_modules, o.nh_kernel_tree, o.nh_kernel_config)
        reporter = config.pluginmanager.get_plugin("terminalreporter")

        def say(message: str) -> None:
            if reporter is not None:
                reporter.write_line(message)

        p = VMPool(PoolOptions(kernel=kernel, accel=o.nh_accel, qemu=o.nh_qemu or os.environ.get("NUMA_HARNESS_QEMU"),
                               keep_on_failure=o.nh_keep), say)
        config.stash[POOL] = p
    return p


def topology_name(item: pytest.Item) -> str | None:
    """The name of the item's topology (a preset name or the YAML file's stem), if it has one."""
    marker = item.get_closest_marker("topology")
    if marker is None or not marker.args:
        return None
    return Path(str(marker.args[0])).stem


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(config.option.nh_topology or ())
    keep, drop = [], []
    for item in items:
        name = topology_name(item)
        if name is not None:
            item.extra_keyword_matches.add(name)
        if wanted and name is not None and name not in wanted:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("requires_kconfig")
    if marker is None:
        return
    try:
        config = pool(item.config).kernel_config()
    except HarnessError as e:
        pytest.fail(f"numa-harness: {e}", pytrace=False)
    if config is None:
        pytest.skip(f"the kernel's .config is unknown (pass --kernel-config): cannot check {', '.join(marker.args)}")
    missing = [opt for opt in marker.args if config.get(opt) not in ("y", "m")]
    if missing:
        pytest.skip(f"kernel lacks {', '.join(missing)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After a test that used ``vm``: kernel problems it did not expect fail it; expected ones must appear."""
    result = yield
    m = item.stash.get(MACHINE, None)
    if m is None:
        return result
    problems_before, ooms_before = item.stash.get(PROBLEMS_BEFORE, (0, 0))
    marker = item.get_closest_marker("expect_kernel_problem")
    expected = set(marker.args) if marker else set()
    strict = bool(marker.kwargs.get("strict", True)) if marker else False
    new = m.problems()[problems_before:]
    item.stash[NEW_PROBLEMS] = (m.name, new, expected)
    message = unexpected_problems(new, m.oom_kills()[ooms_before:], expected, strict=strict)
    if message:
        pytest.fail(message, pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    m = item.stash.get(MACHINE, None)
    if m is None or report.when == "teardown":
        return report
    if not report.failed:
        if report.when == "call":
            report.numa_harness = test_extra(item, _timelines(item), None, None)  # type: ignore[attr-defined]
        return report
    pool(item.config).note_failure(m, item.nodeid)
    f = failure.collect(m, item.stash.get(MARK, None), item.stash.get(STATS, None), item.stash.get(WORKLOADS, None))
    console_log, where = str(m.console_log), None
    try:
        reproduce = bundle.reproduce_script(
            python=bundle.python(), rootdir=str(item.config.rootpath), nodeid=item.nodeid,
            options=bundle.machine_options(m, item.config.option.nh_qemu), env=bundle.kept_env())
        where = bundle.write_bundle(artifacts_root(item.config), nodeid=item.nodeid, m=m, failure=f,
                                    failure_text=str(report.longrepr), reproduce=reproduce,
                                    properties=item.user_properties)
        console_log = str(where / "console.log")
    except OSError as e:
        report.sections.append(("numa-harness: bundle", f"(could not write the failure bundle: {e})"))
    sections = f.sections(console_log)
    if where is not None:
        sections.append(("numa-harness: failure bundle", f"{where}\nreproduce: {where / 'reproduce.sh'}"))
    junit.attach(report, sections)
    report.numa_harness = test_extra(item, _timelines(item), sections, where)  # type: ignore[attr-defined]
    return report


def _timelines(item: pytest.Item) -> list[Any]:
    probe = item.stash.get(STATS, None)
    return list(getattr(probe, "timelines", []))


def pytest_sessionstart(session: pytest.Session) -> None:
    """SIGTERM/SIGHUP stop the session as Ctrl-C does (:mod:`harness.plugin.signals`)."""
    signals = SessionSignals()
    signals.install()
    session.config.stash[SIGNALS] = signals


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    signals = config.stash.get(SIGNALS, None)
    if signals is not None and signals.exit_status() is not None:
        session.exitstatus = signals.exit_status()  # type: ignore[assignment]  # 128+N, not an ExitCode
    p = config.stash.get(POOL, None)
    notes = p.close() if p is not None else []
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: nobody sees its terminal; its controller says them
        workeroutput[NOTES_KEY] = notes
        return
    notes = [*notes, *config.stash.get(WORKER_NOTES, [])]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for note in notes:
        if reporter is not None:
            reporter.write_line(note)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the signal handlers; each KTAP/KUnit result a test case of its own in the JUnit file
    (:func:`junit.split_ktap_cases`)."""
    signals = config.stash.get(SIGNALS, None)
    if signals is not None:
        signals.restore()
    junit.split_ktap_file(getattr(config.option, "xmlpath", None))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: keep a finished worker's notes for :func:`pytest_sessionfinish`."""
    notes = getattr(node, "workeroutput", {}).get(NOTES_KEY, [])
    node.config.stash.setdefault(WORKER_NOTES, []).extend(notes)
