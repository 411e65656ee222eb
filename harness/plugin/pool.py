"""One booted VM per topology per test session, booted when a test first needs it.

:class:`VMPool` owns the session's VMs. ``machine(ref)`` returns the
:class:`~harness.boot.Machine` for a topology (a preset name or a
YAML path), booted by :func:`harness.boot.boot` on first use; the same VM serves every
later test of that topology. A VM that died (a panic, QEMU killed) is
dropped and the next test gets a fresh one. A topology whose boot failed is
remembered, so its other tests fail at once with the same message instead
of booting again. ``close()`` shuts everything down; with
``keep_on_failure`` a VM that served a failed test is left running as a
background VM (``harness ssh pytest-TOPOLOGY-PID``) instead.

With ``keep_on_failure`` every VM is a background VM from the moment its QEMU is spawned:
its work directory is a state directory of its own (:func:`kept_vm_name`, reserved by
:func:`harness.vm.state.reserve_vm_dir`), so ``harness status`` sees it and ``harness down``
stops it even if the session is killed (SIGKILL, a crashed xdist worker) before it decides.
A VM the session does not keep is shut down and its directory removed.

No pytest here: the plugin passes options in and shows ``say`` messages.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.boot import KernelSpec, Machine, boot
from harness.boot.prepare import resolve_kernel
from harness.errors import HarnessError, TopologyError
from harness.kernel.config import parse_config
from harness.kernel.model import Kernel
from harness.topology import resolve
from harness.vm.state import reserve_vm_dir, write_meta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolOptions:
    """The session's choices (from the pytest command line)."""

    kernel: KernelSpec = KernelSpec()
    accel: str | None = None
    qemu: str | None = None
    keep_on_failure: bool = False
    topology_path: tuple[Path, ...] = ()   # folders a topology name is looked up in before the presets


def find_topology(ref: str | Path, base: Path | None = None, search: tuple[Path, ...] = ()) -> Path:
    """Where topology ``ref`` is (see :meth:`VMPool.resolve_ref`)."""
    p = Path(ref)
    is_path = p.suffix in (".yaml", ".yml") or "/" in str(ref)
    if base is not None and not p.is_absolute() and is_path:
        near = base / p
        if near.is_file():
            return near.resolve()
    if not is_path:
        for folder in search:
            for candidate in (folder / f"{ref}.yaml", folder / f"{ref}.yml"):
                if candidate.is_file():
                    log.debug("topology %s: %s (from the topology path)", ref, candidate)
                    return candidate.resolve()
    try:
        return resolve(ref).resolve()
    except TopologyError as e:
        if is_path or not search:
            raise
        where = ", ".join(str(f) for f in search)
        raise TopologyError(str(ref), "", f"is neither {ref}.yaml in the topology path ({where}) nor a preset",
                            hint=e.hint) from None


def kept_vm_name(topology: str, pid: int) -> str:
    """The background-VM name of a session's VM of ``topology`` (pure): ``pytest-TOPOLOGY-PID``.

    The PID of the pytest process (an xdist worker has its own) keeps two sessions, or two
    workers, apart; characters a VM name cannot hold become ``_`` and a long topology name is
    cut so the name fits in 64 characters."""
    tail = f"-{pid}"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", topology)[:64 - len("pytest-") - len(tail)]
    return f"pytest-{stem}{tail}"


class BootFailed(HarnessError):
    """A topology's VM could not be booted or set up in this session (the first error, repeated)."""


class VMPool:
    """The session's VMs, one per topology."""

    def __init__(self, options: PoolOptions, say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._say = say or (lambda _m: None)
        self._machines: dict[Path, Machine] = {}
        self._failures: dict[Path, HarnessError] = {}
        self._failed_tests: dict[int, list[str]] = {}  # id(machine) -> the failed tests it served
        self._state_dirs: dict[int, Path] = {}  # id(machine) -> its state directory (keep_on_failure)
        self._kernel: Kernel | None = None
        self._config: dict[str, str] | None = None

    # -- kernel ----------------------------------------------------------------

    def kernel(self) -> Kernel:
        """The session's kernel (resolved once; fetching the default kernel if needed)."""
        if self._kernel is None:
            self._kernel = resolve_kernel(self.options.kernel, self._say)
        return self._kernel

    def kernel_config(self) -> dict[str, str] | None:
        """The session kernel's ``.config`` options, or None when it is not known."""
        if self._config is None:
            k = self.kernel()
            if k.config is None:
                return None
            self._config = parse_config(k.config.read_text(errors="replace"))
        return self._config

    # -- machines --------------------------------------------------------------

    def resolve_ref(self, ref: str | Path, base: Path | None = None) -> Path:
        """A topology reference -> its YAML file: a path relative to ``base`` (the test's folder);
        a bare name found as NAME.yaml in the ``topology_path`` folders, in order; else a path
        relative to the working directory, else a preset name."""
        return find_topology(ref, base, self.options.topology_path)

    def machine(self, ref: str | Path, base: Path | None = None) -> Machine:
        """The running Machine for topology ``ref``, booted now if this is its first use."""
        path = self.resolve_ref(ref, base)
        failure = self._failures.get(path)
        if failure is not None:
            raise BootFailed(f"{path.stem}: booting failed earlier in this session: {failure}",
                             detail=failure.detail)
        m = self._machines.get(path)
        if m is not None and m.running:
            return m
        if m is not None:  # died (panic, killed): the next test gets a fresh VM
            self._say(f"numa-harness: the {m.name} VM is gone; booting a fresh one")
            self.discard(m)
        try:
            m = self._boot(path)
        except HarnessError as e:
            self._failures[path] = e
            raise
        self._machines[path] = m
        return m

    def _boot(self, path: Path) -> Machine:
        t0 = time.monotonic()
        o = self.options
        name, workdir = f"pytest-{path.stem}", None
        if o.keep_on_failure:  # a background VM from its spawn on, under a name of its own
            name, workdir = reserve_vm_dir(kept_vm_name(path.stem, os.getpid()))
        # baseline=False: the vm fixture puts the guest in its state before each test, marking dmesg
        try:
            m = boot(path, kernel=o.kernel, accel=o.accel, qemu=o.qemu, detach=o.keep_on_failure,
                     name=name, workdir=workdir, baseline=False, progress=self._say,
                     step=lambda title: log.info("%s: %s", path.stem, title))
        except BaseException:
            if workdir is not None and not (workdir / "console.log").exists():
                shutil.rmtree(workdir, ignore_errors=True)  # nothing ran: nothing to read there
            raise
        if workdir is not None:
            self._state_dirs[id(m)] = workdir
            write_meta(workdir, topology=m.name, kernel=m.prepared.kernel.origin, accel=m.prepared.accel.accel)
        p = m.prepared
        self._say(f"numa-harness: booted {p.loaded.name} in {time.monotonic() - t0:.1f} s "
                  f"(kernel {p.kernel.release}, accel {p.accel.accel}, {len(m.setup.regions)} CXL regions)")
        return m

    def note_failure(self, m: Machine, test: str) -> None:
        """Record that ``m`` served the failed test ``test`` (``keep_on_failure`` keeps it running)."""
        self._failed_tests.setdefault(id(m), []).append(test)

    def discard(self, m: Machine) -> None:
        """Shut ``m`` down and forget it."""
        for key, have in list(self._machines.items()):
            if have is m:
                del self._machines[key]
        self._failed_tests.pop(id(m), None)
        self._shutdown(m)

    def _shutdown(self, m: Machine) -> None:
        """Shut ``m`` down; a background one's state directory goes with it, unless its console
        showed a kernel problem (its log stays there to read, as a foreground VM's does)."""
        m.shutdown()
        d = self._state_dirs.pop(id(m), None)
        if d is not None and not m.problems():
            shutil.rmtree(d, ignore_errors=True)

    def machines(self) -> list[Machine]:
        """The VMs booted so far."""
        return list(self._machines.values())

    def close(self) -> list[str]:
        """Shut every VM down (or keep the failed ones); lines to tell the user."""
        notes = []
        for m in self.machines():
            failed = self._failed_tests.get(id(m), [])
            d = self._state_dirs.get(id(m))
            if self.options.keep_on_failure and failed and m.running and d is not None:
                m.vm.write_state(d)
                m.close()
                self._state_dirs.pop(id(m), None)
                name = d.name
                notes.append(f"numa-harness: kept the {m.name} VM for {len(failed)} failed test(s): "
                             f"harness ssh {name}   (harness down {name} when done)")
            else:
                self._shutdown(m)
        self._machines.clear()
        self._failed_tests.clear()
        return notes
