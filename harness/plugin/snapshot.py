"""Fresh VMs per test: ``@pytest.mark.fresh_vm`` and ``--fresh-vm``.

A ``fresh_vm`` test gets a machine of its own, restored from a snapshot of its topology taken
once right after boot and guest set-up (:mod:`harness.boot.snapshot`; cached across sessions,
re-taken when anything that made the VM changes), and shut down after the test: nothing an
earlier test did (a cgroup, a hog, a sysctl, page cache) can be there. The shared per-topology
VM of the other tests is not touched.

A topology QEMU cannot snapshot (CXL devices save no state) gets a fresh boot per such test
instead; the session says so once per topology. ``--keep-vm-on-failure`` does not keep fresh
VMs (each is gone after its test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.boot import Machine, boot
from harness.boot.prepare import Prepared, prepare
from harness.boot.snapshot import restore, snapshot_blocker, snapshot_for
from harness.plugin.pool import PoolOptions, VMPool


class FreshMachines:
    """Makes fresh machines for one session: a prepared topology and its snapshot, cached per topology."""

    def __init__(self, options: PoolOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self._say = say
        self._prepared: dict[Path, Prepared] = {}
        self._told: set[Path] = set()

    def machine(self, path: Path) -> Machine:
        """A machine of topology file ``path`` no other test has used; the caller shuts it down."""
        o = self.options
        p = self._prepared.get(path)
        if p is None:
            p = prepare(path, kernel=o.kernel, accel=o.accel, qemu=o.qemu, name=f"pytest-{path.stem}")
            self._prepared[path] = p
        reason = snapshot_blocker(p)
        if reason is not None:
            if path not in self._told:
                self._told.add(path)
                self._say(f"numa-harness: {p.loaded.name}: fresh_vm tests boot it fresh each time, no snapshot: {reason}")
            return boot(path, kernel=o.kernel, accel=o.accel, qemu=o.qemu, name=f"pytest-{path.stem}-fresh",
                        baseline=False)
        snap = snapshot_for(p, say=self._say)
        return restore(p, snap, name=f"pytest-{path.stem}-fresh")


_FRESH = pytest.StashKey[FreshMachines]()


def fresh_machine(config: pytest.Config, pool: VMPool, ref: str | Path, base: Path | None) -> Machine:
    """A fresh machine of topology ``ref`` for one test (the session's :class:`FreshMachines`)."""
    f = config.stash.get(_FRESH, None)
    if f is None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")

        def say(message: str) -> None:
            if reporter is not None:
                reporter.write_line(message)

        f = FreshMachines(pool.options, say)
        config.stash[_FRESH] = f
    return f.machine(pool.resolve_ref(ref, base))
