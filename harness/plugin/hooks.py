"""The plugin's pytest hooks: options, markers, selection by topology, kernel-problem checks, failure reports."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from harness.boot import KernelSpec, Machine
from harness.errors import HarnessError
from harness.plugin import parallel
from harness.plugin.pool import PoolOptions, VMPool
from harness.plugin.problems import unexpected_problems

POOL = pytest.StashKey[VMPool]()
MACHINE = pytest.StashKey[Machine]()
MARK = pytest.StashKey[str]()
PROBLEMS_BEFORE = pytest.StashKey[tuple[int, int]]()
STATS = pytest.StashKey[Any]()

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
                help="leave a VM that served a failed test running (harness ssh pytest-TOPOLOGY)")
    g.addoption("--fresh-vm", dest="nh_fresh_vm", action="store_true",
                help="give every test a VM of its own, restored from a snapshot (as @pytest.mark.fresh_vm)")
    g.addoption("--topology", dest="nh_topology", action="append", metavar="NAME",
                help="run only the tests of this topology (repeatable); -k NAME works too")


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    parallel.configure(config)


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
