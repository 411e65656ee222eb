"""The plugin's fixtures: ``numa_harness_pool``, ``vm``, ``guest``, ``stats``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from harness.errors import HarnessError
from harness.guest import background, workloads
from harness.plugin import junit
from harness.plugin.hooks import MACHINE, MARK, PROBLEMS_BEFORE, STATS, WORKLOADS, harness_failure, pool, wants_fresh

if TYPE_CHECKING:  # imported when a test first asks for a machine: not at every pytest start
    from harness.boot import Machine
    from harness.guest.background import Started
    from harness.plugin.pool import VMPool
    from harness.runner import CommandOutput
    from harness.stats import Delta, Snapshot
    from harness.stats.timeline import Timeline

_COUNTER = itertools.count(1)
R = TypeVar("R")


@pytest.fixture(scope="session")
def numa_harness_pool(pytestconfig: pytest.Config) -> VMPool:
    """The session's VMs, one per topology (booted on first use, shut down at the end)."""
    return pool(pytestconfig)


@pytest.fixture
def vm(request: pytest.FixtureRequest, numa_harness_pool: VMPool) -> Iterator[Machine]:
    """The booted machine of the test's ``@pytest.mark.topology``, in a known state (a machine of
    its own, restored from a snapshot, for a ``fresh_vm`` test or under ``--fresh-vm``)."""
    item = request.node
    marker = item.get_closest_marker("topology")
    if marker is None or not marker.args:
        pytest.fail(f"{item.nodeid} uses the vm fixture but has no @pytest.mark.topology(...)", pytrace=False)
    base = Path(str(item.path)).parent
    try:
        if wants_fresh(item):
            from harness.plugin.snapshot import fresh_machine

            m = fresh_machine(item.config, numa_harness_pool, marker.args[0], base)
            request.addfinalizer(m.shutdown)
        else:
            m = numa_harness_pool.machine(marker.args[0], base)
    except HarnessError as e:
        raise harness_failure(e, detail=True) from None
    masks = item.get_closest_marker("requires_node_mask")
    if masks is not None:
        from harness.stats import snapshot

        have = list(snapshot(m.vm, boot_log=False).masks)
        missing = [name for name in masks.args if name not in have]
        if missing:
            pytest.skip(f"the guest kernel has no node mask {', '.join(missing)} "
                        f"(it has {', '.join(sorted(n for n in have if n.startswith('has_')))})")
    from harness.guest.state import GuestState

    wanted = item.get_closest_marker("guest_state")
    state = GuestState.of(m.baseline, **wanted.kwargs) if wanted else m.baseline
    mark = f"pytest begin {next(_COUNTER)} {item.nodeid}"
    try:
        m.apply_state(state, mark=mark)
    except HarnessError as e:
        raise harness_failure(e) from None
    item.stash[MACHINE] = m
    junit.record(item, m)  # topology, kernel release, accelerator, QEMU version, boot time: JUnit properties
    item.stash[MARK] = mark
    item.stash[PROBLEMS_BEFORE] = (len(m.problems()), len(m.oom_kills()))
    yield m


class GuestPrograms:
    """Runs the guest programs on the test's machine and returns their typed reports.

    Each method takes the keyword arguments of the command-line builder of the
    same name in :mod:`harness.guest.workloads` (see its docstrings and
    ``programs/README.md``), e.g. ``guest.place(16, policy="bind", nodes=[1])``.
    A refused syscall is data (``result.refused``), not an exception.
    """

    def __init__(self, machine: Machine, log: list[dict[str, Any]] | None = None) -> None:
        self.machine = machine
        #: every command the programs ran and what it printed (a failed test's bundle keeps it)
        self.log: list[dict[str, Any]] = [] if log is None else log
        self._runner = _Recorder(machine, self.log)

    def place(self, size_mib: int, *, timeout: float = 300, **kw: Any) -> workloads.PlaceResult:
        """Allocate and touch ``size_mib`` under a policy; pages per node."""
        return self._run(workloads.place(size_mib, **kw), workloads.PlaceResult, timeout)

    def move(self, size_mib: int, to: int, *, timeout: float = 300, **kw: Any) -> workloads.MoveResult:
        """``move_pages`` a buffer to node ``to``; per-page statuses and checksums."""
        return self._run(workloads.move(size_mib, to, **kw), workloads.MoveResult, timeout)

    def migrate(self, from_nodes: Any, to_nodes: Any, *, timeout: float = 300, **kw: Any) -> workloads.MigrateResult:
        """``migrate_pages`` of a process (``pid=``) or of a child holding ``size_mib=``."""
        return self._run(workloads.migrate(from_nodes, to_nodes, **kw), workloads.MigrateResult, timeout)

    def pressure(self, target: str, until: str, *, timeout: float = 600, **kw: Any) -> workloads.PressureResult:
        """Fill memory towards ``target`` (``node:N``, ``machine``, ``cgroup:PATH``) in steps."""
        return self._run(workloads.pressure(target, until, **kw), workloads.PressureResult, timeout)

    def start(self, command: str, *, timeout: float = 300) -> Started:
        """Start a holding program (built with ``hold_until_signal=True``) in the background.

        Returns once it printed its report, i.e. once its memory is in place (the
        programs print before they hold), with its pid and parsed report. The
        program keeps running; ``stop(pid)`` ends it, and so does the next test's
        state reset. Raises WorkloadError if it exits first or the timeout passes (it is
        then ended).
        """
        return background.start(self._runner, command, timeout=timeout)

    def stop(self, pid: int) -> None:
        """End a program started with :meth:`start` (SIGTERM: it exits 0, freeing its memory)."""
        background.stop(self._runner, pid)

    def _run(self, command: str, kind: type[R], timeout: float) -> R:
        result = workloads.run(self._runner, command, timeout=timeout)
        if not isinstance(result, kind):
            raise workloads.WorkloadError(f"expected a {kind.__name__}, the program printed a {type(result).__name__}")
        return result


class _Recorder:
    """The machine as a :class:`~harness.runner.GuestRunner` that logs each command and its output."""

    def __init__(self, machine: Machine, log: list[dict[str, Any]]) -> None:
        self.machine, self.log = machine, log

    def run(self, command: str, *, timeout: float = 120, check: bool = True) -> CommandOutput:
        r = self.machine.run(command, timeout=timeout, check=False)
        self.log.append({"command": command, "exit_status": r.exit_status, "stdout": r.stdout,
                         "stderr": r.stderr[-4000:]})
        from harness.vm.commands import command_error

        err = command_error(r, r.oom_kills) if check else None  # what Machine.run(check=True) raises
        if err is not None:
            raise err
        return r


@pytest.fixture
def guest(request: pytest.FixtureRequest, vm: Machine) -> GuestPrograms:
    """Guest programs on the test's machine, returning their reports."""
    programs = GuestPrograms(vm)
    request.node.stash[WORKLOADS] = programs.log
    return programs


class Stats:
    """Node statistics of the test's machine: snapshots and deltas, one SSH round trip each.

    ``before`` is the snapshot taken as the test began; ``delta()`` is the change from
    it to now. ``snapshot(pid=..., cgroup=...)`` adds a process's numa_maps and a
    cgroup's memory.numa_stat.
    """

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.before: Snapshot = self.snapshot()
        #: the :meth:`timeline` runs of this test, for the HTML report's plots
        self.timelines: list[Timeline] = []
        self.last: Snapshot | None = None  # the latest snapshot taken through this object

    def snapshot(self, pid: int | None = None, cgroup: str | None = None, *, cxl: bool = False) -> Snapshot:
        """Every NUMA statistic of the guest now (counters folded first)."""
        from harness.stats import snapshot

        self.last = snapshot(self.machine, pid=pid, cgroup=cgroup, cxl=cxl)
        return self.last

    @contextmanager
    def timeline(self, interval: float = 0.5, *, label: str = "", max_seconds: float = 900) -> Iterator[Timeline]:
        """Sample memory per node in the guest every ``interval`` s while the block runs::

            with stats.timeline(0.5, label="reclaim") as tl:
                guest.pressure(...)
            assert tl.change_kb(1) > 0

        The samples are in the :class:`~harness.stats.timeline.Timeline` once the block ends (the
        sampler stops by itself after ``max_seconds``); the HTML report plots every timeline.
        """
        from harness.stats import timeline as node_timeline

        out = f"/tmp/nh-timeline-{next(_COUNTER)}"
        pid = node_timeline.parse_started(
            self.machine.run(node_timeline.start_command(interval, max_seconds, out), timeout=30).stdout)
        tl = node_timeline.Timeline(label or f"timeline {len(self.timelines) + 1}")
        self.timelines.append(tl)
        try:
            yield tl
        finally:
            if self.machine.running:
                r = self.machine.run(node_timeline.stop_command(pid, out), timeout=60, check=False)
                tl.samples.extend(node_timeline.parse_samples(r.stdout))

    def delta(self, since: Snapshot | None = None) -> Delta:
        """What changed from ``since`` (default: the test's start) to now."""
        return (since or self.before).delta(self.snapshot())

    def describe_delta(self) -> str:
        """The non-zero changes since the test began, for a failure report (the snapshot it takes
        is :attr:`last`, which a failed test's bundle keeps as the "after" snapshot)."""
        return self.delta().summary()


@pytest.fixture
def stats(request: pytest.FixtureRequest, vm: Machine) -> Stats:
    """Snapshots and deltas of the guest's node statistics (a snapshot is taken as the test begins)."""
    probe = Stats(vm)
    request.node.stash[STATS] = probe
    return probe
