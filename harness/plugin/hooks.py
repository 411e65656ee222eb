"""The plugin's pytest hooks: options, markers, selection by topology, kernel-problem checks, failure reports.

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
from harness.plugin import options

if TYPE_CHECKING:
    from harness.boot import Machine  # noqa: F401 (a StashKey type, in quotes)
    from harness.plugin.pool import VMPool


POOL = pytest.StashKey["VMPool"]()
MACHINE = pytest.StashKey["Machine"]()
MARK = pytest.StashKey[str]()
PROBLEMS_BEFORE = pytest.StashKey[tuple[int, int]]()
STATS = pytest.StashKey[Any]()

MARKERS = (
    "topology(ref): run on this numa-harness topology (preset name or YAML path); one VM per topology per session",
    "guest_state(**knobs): guest knobs other than the baseline, e.g. numa_balancing=2, thp='always', demotion=True",
    "requires_kconfig(*options): skip unless the kernel's .config has these options (y or m)",
    "requires_node_mask(*masks): skip unless the guest exposes /sys/devices/system/node/<mask>",
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
    message = unexpected_problems(m.problems()[problems_before:], m.oom_kills()[ooms_before:], expected,
                                  strict=strict)
    if message:
        pytest.fail(message, pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    m = item.stash.get(MACHINE, None)
    if m is None or not report.failed or report.when == "teardown":
        return report
    pool(item.config).note_failure(m, item.nodeid)
    tail = m.console_tail(40)
    if tail:
        report.sections.append(("numa-harness: console tail", f"{tail}\n(console log: {m.console_log})"))
    mark = item.stash.get(MARK, None)
    if mark and m.running:
        try:
            dmesg = m.dmesg_since(mark, timeout=20)
        except HarnessError as e:
            dmesg = f"(could not read dmesg: {e})"
        report.sections.append(("numa-harness: guest dmesg since the test began", dmesg or "(nothing)"))
    probe = item.stash.get(STATS, None)
    if probe is not None and m.running:
        try:
            report.sections.append(("numa-harness: statistics delta since the test began", probe.describe_delta()))
        except HarnessError as e:
            report.sections.append(("numa-harness: statistics delta", f"(could not take a snapshot: {e})"))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    p = session.config.stash.get(POOL, None)
    if p is None:
        return
    notes = p.close()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for note in notes:
        if reporter is not None:
            reporter.write_line(note)
