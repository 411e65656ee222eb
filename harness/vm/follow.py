"""Following a boot: waiting for console milestones, each with its deadline, and saying why it failed.

:class:`BootFollower` waits on the :class:`~harness.vm.console_log.ConsoleMonitor`
and checks, between waits, whether waiting is pointless (a panic, QEMU gone, a
KVM error, the guest's /init reporting that network or sshd failed). While booting, a stall on the console (RCU stall, soft lockup) ends the wait
at once as well (:meth:`BootFollower.boot_abort_reason`); once the guest is up,
a stall is reported with the command that saw it, not as a reason to stop. The
cause itself comes from :func:`harness.vm.diagnosis.diagnose`, a pure function of
console text, QEMU's stderr and exit status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.vm import diagnosis
from harness.vm.console_log import ConsoleMonitor
from harness.vm.problems import EXCERPT_AFTER, STALL

#: Seconds a stall's report gets to reach the console before the boot is abandoned with it.
STALL_EXCERPT_WAIT = 2.0


class BootFollower:
    """What the console and QEMU say about one VM, turned into waits and errors."""

    def __init__(self, monitor: ConsoleMonitor, *, qemu_log: Path, console_log: Path,
                 alive: Callable[[], bool], exit_status: Callable[[], int | None],
                 wait_exit: Callable[[float], bool], timeout_hint: Callable[[], str],
                 accel: str | None = None) -> None:
        self.monitor = monitor
        self._accel = accel  # the -accel option, for the hint after a stall
        self._stall_checked = 0  # problems before this index held no stall
        self._qemu_log = qemu_log
        self._console_log = console_log
        self._alive = alive
        self._exit_status = exit_status
        self._wait_exit = wait_exit
        self._timeout_hint = timeout_hint

    def qemu_stderr(self) -> str:
        try:
            return self._qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _diagnose(self, *, exited: bool, timed_out: str | None = None) -> HarnessError | None:
        self.monitor.poll()
        return diagnosis.diagnose(self.monitor.text(), self.qemu_stderr(), self._exit_status() if exited else None,
                                  console_log=str(self._console_log), timed_out=timed_out,
                                  timeout_hint=self._timeout_hint() if timed_out else None)

    def abort_reason(self) -> HarnessError | None:
        """Why waiting on the guest is pointless now (panic, QEMU gone, KVM error, a failed service), or None."""
        fatal = any(p.fatal for p in self.monitor.problems(since=max(0, self.monitor.problem_count - 1)))
        alive = self._alive()
        if alive and not fatal:
            failed = diagnosis.fatal_guest_failure("\n".join(self.monitor.guest_failures()))
            if failed is None and diagnosis.kvm_error(self.qemu_stderr()) is None:
                return None
            return self._diagnose(exited=False)
        if alive:  # a panic: QEMU is about to exit; let the console catch up
            self._wait_exit(3.0)
        return self._diagnose(exited=not self._alive()) or self._diagnose(exited=True)

    def boot_abort_reason(self) -> HarnessError | None:
        """:meth:`abort_reason`, or a stall on the console: the boot will not come up in time.

        The error waits up to :data:`STALL_EXCERPT_WAIT` s for the report's lines to reach the
        console, so its excerpt holds the stall's detail, not just its first line."""
        exc = self.abort_reason()
        if exc is not None:
            return exc
        mon = self.monitor
        count = mon.problem_count
        if count <= self._stall_checked:
            return None
        new = mon.problems(since=self._stall_checked)
        self._stall_checked = count
        stall = next((p for p in new if p.kind == STALL), None)
        if stall is None:
            return None
        mon.wait(lambda: mon.line_count > stall.index + EXCERPT_AFTER, STALL_EXCERPT_WAIT)
        return diagnosis.boot_stall_error(mon.problems(), accel=self._accel, console_log=str(self._console_log))

    def await_milestone(self, milestone: str, deadline: float, limit: float, what: str) -> None:
        """Wait for console ``milestone`` until ``deadline`` (monotonic); raise the diagnosis on failure."""
        mon = self.monitor
        while not mon.seen(milestone):
            exc = self.boot_abort_reason()
            if exc is not None:
                raise exc
            if time.monotonic() > deadline:
                raise self.timeout_error(f"{what} within {limit:g} s (no '{milestone}' milestone)")
            mon.wait(lambda: mon.seen(milestone), min(0.25, max(0.0, deadline - time.monotonic())))

    def timeout_error(self, message: str, extra: str | None = None) -> HarnessError:
        """A milestone did not come in time: the diagnosis (a kernel problem wins)."""
        exc = self._diagnose(exited=not self._alive(), timed_out=message)
        assert exc is not None
        if extra and exc.detail is not None:
            exc.detail = f"{extra}\n{exc.detail}"
        return exc
