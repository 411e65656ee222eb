"""The plugin's pytest hooks: options, markers, selection by topology, kernel-problem checks, failure reports
(diagnostics read once by :mod:`.failure`, put into the report and JUnit by :mod:`.junit`, kept in a
bundle by :mod:`.bundle`), and the run's record (:mod:`.runlog`: kernel problems, the HTML report).

Loaded at every pytest start in an environment that has the wheel, numa-harness tests or
not: the modules that boot machines (``harness.boot``, ``harness.vm``, paramiko, QMP) are
imported only when a test first needs a machine or its kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError
from harness.plugin import bundle, failure, junit, options, parallel
from harness.plugin.runlog import NEW_PROBLEMS, RunLog, test_extra
from harness.plugin.signals import SessionSignals

if TYPE_CHECKING:
    from harness.boot import Machine  # noqa: F401 (a StashKey type, in quotes)
    from harness.plugin.pool import VMPool


POOL = pytest.StashKey["VMPool"]()
MACHINE = pytest.StashKey["Machine"]()
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
    "fresh_vm: run on a machine of its own, restored from a snapshot taken after boot and set-up "
    "(a fresh boot for CXL topologies); no other test's state can reach it",
    "expect_kernel_problem(kind, strict=True): the test provokes this kernel report (oom, warning, bug, oops, "
    "call-trace, allocation-failure) on purpose",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.register(parser, options.CORE)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> Generator[None, None, None]:
    """Once the repository's own conftests have registered their options, take the old
    unprefixed names (``--kernel``, ...) that nothing else owns."""
    result = yield
    options.register_aliases(parser)
    return result


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    options.resolve(config, options.CORE)
    parallel.configure(config)
    log = RunLog(config.option.nh_html, fail_on_problems=bool(config.option.nh_fail_problems),
                 machines=lambda: pool(config).machines() if POOL in config.stash else [])
    config.stash[RUNLOG] = log
    config.pluginmanager.register(log, "numa-harness-runlog")


def artifacts_root(config: pytest.Config) -> Path:
    """``--nh-artifacts``, else the default folder under pytest's basetemp."""
    if config.option.nh_artifacts:
        return Path(config.option.nh_artifacts).resolve()
    return config._tmp_path_factory.getbasetemp() / bundle.DEFAULT_DIR  # type: ignore[attr-defined]


def harness_failure(e: HarnessError, *, detail: bool = False) -> BaseException:
    """The test failure for a harness error: its message once, no traceback; ``raise harness_failure(e) from None``."""
    text = f"numa-harness: {e}" + (f"\n{e.detail}" if detail and e.detail else "")
    return pytest.fail.Exception(text, pytrace=False)


def _reporter_say(config: pytest.Config) -> Any:
    """Progress lines for the terminal as they happen (fetching a kernel, building the image, a
    boot's time), also while a fixture's output is being captured."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")

    def say(message: str) -> None:  # the kernel and image code log their messages themselves
        if reporter is None:
            return
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            reporter.write_line(message if message.startswith("numa-harness") else f"numa-harness: {message}")

    return say


def wants_fresh(item: pytest.Item) -> bool:
    """Whether ``item`` runs on a fresh VM (its marker or ``--fresh-vm``)."""
    return item.get_closest_marker("fresh_vm") is not None or bool(getattr(item.config.option, "nh_fresh_vm", False))


def pool(config: pytest.Config) -> VMPool:
    """The session's VM pool (made on first use)."""
    p = config.stash.get(POOL, None)
    if p is None:
        from harness.boot import KernelSpec
        from harness.plugin.pool import PoolOptions, VMPool

        o = config.option
        kernel = KernelSpec.of(o.nh_kernel, o.nh_modules, o.nh_kernel_tree, o.nh_kernel_config)
        p = VMPool(PoolOptions(kernel=kernel, accel=o.nh_accel, qemu=o.nh_qemu, keep_on_failure=o.nh_keep,
                               topology_path=tuple(Path(d) for d in o.nh_topology_path)),
                   _reporter_say(config))
        config.stash[POOL] = p
    return p


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the session would boot, without booting or fetching anything."""
    o = config.option

    def said(name: str, text: str) -> str:
        where = options.source(config, options.setting(name))
        return f"{text} (from {where})" if where else text

    if o.nh_kernel_tree or o.nh_kernel:
        kernel = said("kernel-tree" if o.nh_kernel_tree else "kernel", str(o.nh_kernel_tree or o.nh_kernel))
    else:
        from harness.kernel.debian import cached_default_kernel

        k = cached_default_kernel()
        kernel = f"default, {k.release} (cached)" if k else "default (Debian's packaged kernel, fetched on first use)"
    from harness.paths import cache_dir
    from harness.qemu.preflight import cached_version, find_binary

    try:
        binary = find_binary(o.nh_qemu)
        version = cached_version(binary)
        qemu = said("qemu", binary + (f" {version}" if version else ""))
    except HarnessError as e:
        qemu = f"not usable: {e}"
    accel = said("accel", o.nh_accel) if o.nh_accel else "the topology's (normally auto: KVM if it works, else TCG)"
    try:
        cache = str(cache_dir())
    except HarnessError as e:
        cache = f"not usable: {e}"
    lines = [f"numa-harness: kernel {kernel}; QEMU {qemu}; accelerator {accel}", f"numa-harness: cache {cache}"]
    if o.nh_topology_path:
        lines.append(said("topology-path", "numa-harness: topologies from " + ", ".join(o.nh_topology_path)))
    return lines


def topology_name(item: pytest.Item) -> str | None:
    """The name of the item's topology (a preset name or the YAML file's stem), if it has one."""
    marker = item.get_closest_marker("topology")
    if marker is None or not marker.args:
        return None
    return Path(str(marker.args[0])).stem


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the xdist_group marks
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
    parallel.mark_groups(items, topology_name)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("requires_kconfig")
    if marker is None:
        return
    try:
        config = pool(item.config).kernel_config()
    except HarnessError as e:
        raise harness_failure(e) from None
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
    from harness.plugin.problems import unexpected_problems

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
