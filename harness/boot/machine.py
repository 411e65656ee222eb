"""A booted, set-up machine: :func:`boot` and the :class:`Machine` it returns.

:func:`boot` is the one path from "this topology on this kernel" to a guest a caller can use:
prepare (:func:`harness.boot.prepare.prepare`: every check, the image, the argv) -> start QEMU
and follow the boot to an SSH login (:class:`harness.vm.machine.VM`) -> the topology's guest
set-up (CXL regions, node provisioning, demotion) -> the baseline guest state
(:func:`harness.guest.state.baseline_for`). If any step fails, nothing is left running.

The CLI (``harness boot/run/up/selftest/compare-isolation/contract-report``), the pytest
plugin's pool, the scripts and the live tests all boot through it. :class:`Machine` holds no
pytest and no terminal output; it is a context manager that shuts the VM down on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.boot.prepare import KernelSpec, Prepared, Progress, backing_dir, prepare
from harness.errors import GuestCommandError
from harness.guest.cxl import CxlOps
from harness.guest.dmesg import cut_after_mark
from harness.guest.setup import SetupResult, apply_guest_setup, has_setup
from harness.guest.state import (
    GUEST_STATE_PROGRAM,
    GuestState,
    baseline_for,
    mismatches,
    parse_state_output,
    state_command,
)
from harness.kernel.needs import unmet_requirements
from harness.qemu.argv import type3_hotplug_qmp
from harness.stats import snapshot
from harness.topology.model import Topology
from harness.vm.machine import VM, CommandResult, Timeouts
from harness.vm.problems import OomKill, Problem


@dataclass
class Machine:
    """One booted, set-up guest of one topology: run commands, set state, read logs."""

    name: str                       # the topology's name (preset name or file stem)
    prepared: Prepared
    vm: VM
    setup: SetupResult
    state: dict[str, str] = field(default_factory=dict)  # knobs as last read back from the guest
    _cxl: CxlOps | None = field(default=None, repr=False)

    @property
    def topology(self) -> Topology:
        """The validated topology this VM was booted from."""
        return self.prepared.loaded.topology

    @property
    def console_log(self) -> Path:
        """QEMU's log of the guest's serial console."""
        return self.vm.console_log

    @property
    def running(self) -> bool:
        """Whether QEMU still runs."""
        return self.vm.running

    # -- commands --------------------------------------------------------------

    def run(self, command: str, *, timeout: float = 120, check: bool = True) -> CommandResult:
        """Run a shell command line in the guest as root; ``check`` (the default everywhere, see
        :mod:`harness.runner`) raises CommandFailed / CommandKilled unless it exits 0."""
        return self.vm.run(command, timeout=timeout, check=check)

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
        """Send a QMP command to the VM's QEMU and return its result (:meth:`VM.qmp`)."""
        return self.vm.qmp(command, arguments, timeout=timeout)

    @property
    def cxl(self) -> CxlOps:
        """CXL operations on this guest: poison injected, listed, cleared (:class:`~harness.guest.cxl.CxlOps`)."""
        if self._cxl is None:
            files = str(backing_dir())
            devices = {d.id: d for d in self.topology.cxl.devices} if self.topology.cxl else {}
            self._cxl = CxlOps(self, lambda c, a: self.qmp(c, a),
                               lambda dev, gen: type3_hotplug_qmp(devices[dev], files, gen))
        return self._cxl

    # -- state -----------------------------------------------------------------

    @property
    def baseline(self) -> GuestState:
        """The state every test starts from: no balancing, no THP, demotion as the topology says."""
        return baseline_for(self.topology)

    def apply_state(self, state: GuestState | None = None, *, mark: str | None = None) -> dict[str, str]:
        """Set the guest's page-moving knobs (default: :attr:`baseline`); ends guest programs left
        running; marks dmesg with ``mark``.

        Raises GuestCommandError if the guest refuses a value or reads back another.
        """
        if state is None:
            state = self.baseline
        r = self.vm.run(state_command(GUEST_STATE_PROGRAM, state, mark=mark), timeout=60, check=False)
        got = parse_state_output(r.stdout)
        wrong = mismatches(state, got)
        if wrong:
            raise GuestCommandError(f"the guest did not take the requested state: {'; '.join(wrong)}")
        self.state = got
        return got

    def unmet_requirements(self) -> list[str]:
        """What the topology's ``requires`` needs that the guest kernel lacks (one line each)."""
        t = self.topology
        if not t.requires:
            return []
        masks = set(snapshot(self, boot_log=False).masks)
        return unmet_requirements(t, masks)

    # -- logs ------------------------------------------------------------------

    def dmesg(self, *, timeout: float = 30) -> str:
        """The guest kernel log as ``dmesg`` prints it now."""
        return self.vm.run("dmesg", timeout=timeout, check=False).stdout

    def dmesg_since(self, mark: str, *, timeout: float = 30) -> str:
        """The guest kernel log after the line carrying ``mark`` (all of it if the mark is gone)."""
        return cut_after_mark(self.dmesg(timeout=timeout), mark)

    def console_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the serial console log."""
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def check_health(self) -> None:
        """Raise if the console showed a kernel problem or QEMU is gone (:meth:`VM.check_health`)."""
        self.vm.check_health()

    def problems(self) -> list[Problem]:
        """Kernel problems seen on the console since boot."""
        return self.vm.problems()

    def oom_kills(self) -> list[OomKill]:
        """OOM kills seen on the console since boot."""
        return self.vm.oom_kills()

    # -- end -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the guest (idempotent); nothing is left running."""
        self.vm.shutdown()

    def close(self) -> None:
        """Let go of a background machine (``detach=True``) and leave it running; else :meth:`shutdown`."""
        self.vm.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()



def boot(topology: str | Path, *, kernel: KernelSpec | None = None, accel: str | None = None,
         qemu: str | None = None, name: str | None = None, workdir: Path | None = None, detach: bool = False,
         ssh_port: int | None = None, timeouts: Timeouts | None = None, tcg_thread: str | None = None,
         setup: bool = True, baseline: bool = True, step: Callable[[str], None] | None = None,
         progress: Progress = None, on_milestone: Callable[[str], None] | None = None,
         on_prepared: Callable[[Prepared], None] | None = None, qemu_args: Sequence[str] = ()) -> Machine:
    """Prepare, start and set up a machine of ``topology``; use it as ``with boot(...) as m:``.

    ``kernel=None`` means ``$NUMA_HARNESS_KERNEL`` if set, else the distribution's kernel (as
    :func:`~harness.boot.prepare.prepare`). ``setup=False`` skips the topology's guest set-up,
    ``baseline=False`` leaves the guest's knobs as the kernel set them. ``detach=True`` makes a
    background VM (:meth:`Machine.close` leaves it running). ``step(title)``, ``progress(message)``
    and ``on_milestone(name)`` report progress; ``on_prepared(p)`` is called once everything is
    checked, before QEMU starts. Raises a HarnessError on the first problem, with nothing left
    running.
    """
    say = step or (lambda _t: None)
    p = prepare(topology, kernel=kernel, accel=accel, qemu=qemu, name=name, workdir=workdir, detach=detach,
                ssh_port=ssh_port, timeouts=timeouts, step=step, progress=progress, tcg_thread=tcg_thread,
                qemu_args=qemu_args)
    say("booting")
    if on_prepared is not None:
        on_prepared(p)
    vm = VM(p.spec, on_milestone=on_milestone)
    vm.start()  # shuts QEMU down itself if the boot fails
    try:
        t = p.loaded.topology
        result = SetupResult()
        if setup and has_setup(t):
            say("guest set-up")
            result = apply_guest_setup(vm, t, kernel_image=p.kernel.image)
        m = Machine(name=p.loaded.name, prepared=p, vm=vm, setup=result)
        if baseline:
            m.apply_state()
    except BaseException:
        vm.shutdown()
        raise
    return m
