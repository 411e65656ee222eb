"""The plugin's fixtures: ``numa_harness_pool``, ``vm``, ``guest``, ``stats``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.boot import Machine
from harness.errors import HarnessError
from harness.guest import background, workloads
from harness.guest.background import Started
from harness.guest.state import GuestState
from harness.plugin.hooks import MACHINE, MARK, PROBLEMS_BEFORE, STATS, pool
from harness.plugin.pool import VMPool
from harness.plugin.snapshot import fresh_machine, wants_fresh
from harness.stats import Delta, Snapshot, snapshot

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
            m = fresh_machine(item.config, numa_harness_pool, marker.args[0], base)
            request.addfinalizer(m.shutdown)
        else:
            m = numa_harness_pool.machine(marker.args[0], base)
    except HarnessError as e:
        pytest.fail(f"numa-harness: {e}" + (f"\n{e.detail}" if e.detail else ""), pytrace=False)
    masks = item.get_closest_marker("requires_node_mask")
    if masks is not None:
        have = list(snapshot(m.vm, boot_log=False).masks)
        missing = [name for name in masks.args if name not in have]
        if missing:
            pytest.skip(f"the guest kernel has no node mask {', '.join(missing)} "
                        f"(it has {', '.join(sorted(n for n in have if n.startswith('has_')))})")
    wanted = item.get_closest_marker("guest_state")
    state = GuestState.of(m.baseline, **wanted.kwargs) if wanted else m.baseline
    mark = f"pytest begin {next(_COUNTER)} {item.nodeid}"
    try:
        m.apply_state(state, mark=mark)
    except HarnessError as e:
        pytest.fail(f"numa-harness: {e}", pytrace=False)
    item.stash[MACHINE] = m
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

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

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
        return background.start(self.machine, command, timeout=timeout)

    def stop(self, pid: int) -> None:
        """End a program started with :meth:`start` (SIGTERM: it exits 0, freeing its memory)."""
        background.stop(self.machine, pid)

    def _run(self, command: str, kind: type[R], timeout: float) -> R:
        result = workloads.run(self.machine, command, timeout=timeout)
        if not isinstance(result, kind):
            raise workloads.WorkloadError(f"expected a {kind.__name__}, the program printed a {type(result).__name__}")
        return result


@pytest.fixture
def guest(vm: Machine) -> GuestPrograms:
    """Guest programs on the test's machine, returning their reports."""
    return GuestPrograms(vm)


class Stats:
    """Node statistics of the test's machine: snapshots and deltas, one SSH round trip each.

    ``before`` is the snapshot taken as the test began; ``delta()`` is the change from
    it to now. ``snapshot(pid=..., cgroup=...)`` adds a process's numa_maps and a
    cgroup's memory.numa_stat.
    """

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.before: Snapshot = self.snapshot()

    def snapshot(self, pid: int | None = None, cgroup: str | None = None, *, cxl: bool = False) -> Snapshot:
        """Every NUMA statistic of the guest now (counters folded first)."""
        return snapshot(self.machine, pid=pid, cgroup=cgroup, cxl=cxl)

    def delta(self, since: Snapshot | None = None) -> Delta:
        """What changed from ``since`` (default: the test's start) to now."""
        return (since or self.before).delta(self.snapshot())

    def describe_delta(self) -> str:
        """The non-zero changes since the test began, for a failure report."""
        return self.delta().summary()


@pytest.fixture
def stats(request: pytest.FixtureRequest, vm: Machine) -> Stats:
    """Snapshots and deltas of the guest's node statistics (a snapshot is taken as the test begins)."""
    probe = Stats(vm)
    request.node.stash[STATS] = probe
    return probe
