"""The stock-kernel suite: every test boots (or shares) a real guest, so every test here is live.

These tests use only the numa-harness pytest plugin's public API (markers, ``vm``,
``guest``, ``stats``): they are written the way a kernel developer writes tests in
their own repository, and can be copied there. Helpers shared by several files are
fixtures below.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.guest import cgroup as guest_cgroup

_CGROUPS = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.live)


@dataclass(frozen=True)
class Cgroup:
    """A cgroup v2 directory in the guest."""

    path: str

    def wrap(self, command: str) -> str:
        """``command`` run inside this cgroup (it joins, then execs the command)."""
        return guest_cgroup.run_in(self.path, command)

    def __str__(self) -> str:
        return self.path


@pytest.fixture
def cgroup(vm) -> Iterator[Cgroup]:
    """A fresh cgroup v2 directory with the memory controller; removed after the test."""
    path = f"{guest_cgroup.ROOT}/nh-test-{next(_CGROUPS)}"
    vm.run(guest_cgroup.make(path, "memory"))
    yield Cgroup(path)
    # Processes left in it are ended by the next test's state reset; kill them now so it can be removed.
    vm.run(guest_cgroup.remove(path), check=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """Print what tests measured (their ``measured_*`` user properties), pass or fail."""
    lines = []
    for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed"):
        for key, value in getattr(report, "user_properties", []):
            if key.startswith("measured_"):
                lines.append(f"{report.nodeid}: {key[len('measured_'):]} = {value}")
    if lines:
        terminalreporter.section("numa-harness: measured")
        for line in lines:
            terminalreporter.write_line(line)
