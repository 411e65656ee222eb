"""Running commands in a booted guest: liveness while they run, and what their end means.

* :class:`Liveness` is polled while a command runs: after ``quiet`` seconds
  without output it checks that the QEMU process itself is not stopped (SIGSTOP,
  a debugger: ``/proc/PID/stat`` state ``T``), asks QMP whether the guest runs
  (a ``stop``-ped guest is ``paused``) and whether the guest's sshd still opens
  a channel, so a frozen guest or one whose network went down is reported as
  such within tens of seconds, not after the command's timeout.
* :func:`command_error` (pure) turns a finished command into the error a
  ``check=True`` caller gets: :class:`~harness.errors.CommandKilled` (with the
  OOM kills the console showed) for a signal,
  :class:`~harness.errors.CommandFailed` for a non-zero exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import CommandFailed, CommandKilled, GuestFrozen, HarnessError
from harness.vm.problems import OomKill
from harness.vm.process import is_stopped
from harness.vm.qmp import QMPFailure, SyncQMP
from harness.vm.ssh import CommandResult, GuestSSH

#: QMP run states in which the guest executes no instruction.
STOPPED_STATES = frozenset({"paused", "internal-error", "io-error", "shutdown", "guest-panicked", "watchdog",
                            "suspended"})


class Liveness:
    """Rate-limited liveness checks of a guest (QMP status, an SSH channel open)."""

    def __init__(self, ssh: GuestSSH, qmp: Callable[[], SyncQMP | None], *, pid: int = 0,
                 console_log: Path | None = None, quiet: float = 10.0, probe_timeout: float = 15.0) -> None:
        self._ssh = ssh
        self._qmp = qmp
        self._pid = pid  # QEMU's
        self._log_hint = f"console log: {console_log}" if console_log is not None else "see the console log"
        self.quiet = quiet
        self.probe_timeout = probe_timeout
        self._last_sign = time.monotonic()

    def saw_output(self) -> None:
        """The guest just sent something: it is alive."""
        self._last_sign = time.monotonic()

    def check(self) -> HarnessError | None:
        """A GuestFrozen if the guest stopped answering, else None (cheap when output flows)."""
        if time.monotonic() - self._last_sign < self.quiet:
            return None
        if self._pid and is_stopped(self._pid):
            return GuestFrozen(f"the guest is frozen: the QEMU process itself is stopped (pid {self._pid} "
                               "in state T: SIGSTOP, Ctrl-Z or a debugger)",
                               hint=f"kill -CONT {self._pid} lets it go on; {self._log_hint}")
        status = self._qmp_status()
        if status in STOPPED_STATES:
            return GuestFrozen(f"the guest is frozen: QEMU reports its state as '{status}'",
                               hint=f"resume it with QMP 'cont', or stop it with harness down / Ctrl-C; "
                                    f"{self._log_hint}")
        if not self._ssh.probe(self.probe_timeout):
            return GuestFrozen(f"the guest does not answer: its SSH server opened no channel within "
                               f"{self.probe_timeout:g} s (guest hung, or its network is down)",
                               hint=self._log_hint)
        self._last_sign = time.monotonic()
        return None

    def _qmp_status(self) -> str | None:
        qmp = self._qmp()
        if qmp is None:
            return None
        try:
            reply = qmp.execute("query-status", timeout=3)
        except QMPFailure:
            return None
        return reply.get("status") if isinstance(reply, dict) else None


def command_error(result: CommandResult, oom_kills: list[OomKill]) -> CommandFailed | None:
    """The error for a command that did not succeed, or None (pure)."""
    if result.signal is not None:
        if result.signal == "KILL" and oom_kills:
            oom = oom_kills[-1]
            return CommandKilled(f"guest command killed by the OOM killer (SIGKILL, exit {result.exit_status}): "
                                 f"{oom.message_line}", result, oom_kills=oom_kills, detail=oom.describe())
        return CommandKilled(f"guest command killed by SIG{result.signal} (exit {result.exit_status}): "
                             f"{result.command}", result, detail=_tail(result.stderr or result.stdout))
    if result.exit_status != 0:
        return CommandFailed(f"guest command exited with status {result.exit_status}: {result.command}", result,
                             detail=_tail(result.stderr or result.stdout))
    return None


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.splitlines()[-n:])
