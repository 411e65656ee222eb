"""The link to a running guest that an owned and an attached VM share.

:class:`GuestLink` is everything done with a guest whose QEMU runs, whoever started it: commands
and an interactive shell over SSH (:mod:`harness.vm.ssh`), the serial console and the kernel
problems and OOM kills on it (:mod:`harness.vm.console_log`), and the ordered shutdown:

Shutdown (:meth:`GuestLink.shutdown`, idempotent, every step bounded)
    1. ``poweroff -f`` in the guest, over SSH (or typed on the console if SSH
       is down but the guest's console shell is up); wait for QEMU to exit;
    2. QMP ``quit``; wait;
    3. SIGKILL; wait.

It does not know how QEMU was started. Its two kinds say how QEMU is seen alive, waited for
and killed (:meth:`~GuestLink._qemu_alive`, :meth:`~GuestLink._wait_exit`,
:meth:`~GuestLink.kill_now`): :class:`harness.vm.machine.VM` launched QEMU and holds its
process; :class:`harness.vm.attached.AttachedVM` found a background VM by its state directory
and knows it by a verified PID.
"""

from __future__ import annotations

import enum
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import BootError, GuestCommandError, GuestFrozen, HarnessError
from harness.vm import console as con
from harness.vm import process
from harness.vm.commands import Liveness, command_error
from harness.vm.console_log import ConsoleMonitor
from harness.vm.console_socket import ConsoleSocket, interact
from harness.vm.diagnosis import problem_error
from harness.vm.follow import BootFollower
from harness.vm.keys import KeyPair
from harness.vm.problems import OomKill, Problem
from harness.vm.qmp import QMPFailure, SyncQMP
from harness.vm.spec import WorkFiles
from harness.vm.ssh import CommandResult, GuestSSH, Stdin
from harness.vm.state import RUNNING, VMState, write_state


class Lifecycle(enum.Enum):
    """Where one VM object is in its life."""

    CREATED = "created"  # VM(spec): nothing spawned yet
    STARTING = "starting"  # QEMU spawned, boot being followed
    RUNNING = "running"  # booted, owned by this process (a foreground VM dies with it)
    ATTACHED = "attached"  # a background VM this object talks to (AttachedVM)
    STOPPING = "stopping"  # shutdown in progress
    STOPPED = "stopped"  # QEMU gone, everything released
    FAILED = "failed"  # start failed; QEMU gone; the work directory is kept for diagnosis
    DETACHED = "detached"  # let go of a background VM (close()); QEMU still runs


_TERMINAL = (Lifecycle.STOPPED, Lifecycle.FAILED, Lifecycle.DETACHED)
_USABLE = (Lifecycle.RUNNING, Lifecycle.ATTACHED)


class GuestLink:
    """SSH, console and shutdown of one running guest; see the module docstring.

    Use as a context manager; ``__exit__`` always shuts down. The class prints nothing;
    ``on_milestone(name)`` is called for each milestone of :data:`harness.vm.console.MILESTONES`
    as it is reached (from a background thread for console milestones).
    """

    def __init__(self, workdir: Path, lifecycle: Lifecycle, *, name: str | None, qemu_binary: str,
                 shutdown_budget: float, on_milestone: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.lifecycle = lifecycle
        self.name = name
        self.qemu_binary = qemu_binary
        self.ssh_port = 0
        self.pid = 0
        self.boot_seconds: float | None = None
        self._files = WorkFiles(workdir)
        self._shutdown_budget = shutdown_budget
        self._on_milestone = on_milestone
        self._lock = threading.RLock()
        self._qmp: SyncQMP | None = None
        self._ssh: GuestSSH | None = None
        self._follower: BootFollower | None = None
        self._monitor: ConsoleMonitor | None = None
        self._key: KeyPair | None = None
        self._started_at = 0.0
        self._state_file: Path | None = None
        self._own_workdir = False  # removed after a clean shutdown
        self._keep_workdir = False  # an error named a file in it (a frozen guest's console log)

    # -- how QEMU is seen: each kind of VM says ---------------------------------------

    def _qemu_alive(self) -> bool:
        raise NotImplementedError

    def _exit_status(self) -> int | None:
        """QEMU's exit status, when this process reaped it."""
        return None

    def _wait_exit(self, timeout: float) -> bool:
        raise NotImplementedError

    def kill_now(self) -> None:
        """SIGKILL QEMU and wait for it to go (atexit, last shutdown step)."""
        raise NotImplementedError

    def _accel_option(self) -> str | None:
        """The value of ``-accel`` QEMU runs with (``tcg,thread=multi``), if known."""
        return None

    def _timeout_hint(self) -> str:
        return f"console log: {self.console_log}"

    def close(self) -> None:
        """Let go of the VM: a background one keeps running, a foreground one shuts down."""
        raise NotImplementedError

    # -- public properties ---------------------------------------------------------

    @property
    def console_log(self) -> Path:
        """QEMU's log of the serial console."""
        return self._files.console_log

    @property
    def console_sock(self) -> Path:
        """The console's unix socket (for :meth:`console_interact`)."""
        return self._files.console_sock

    @property
    def qmp_sock(self) -> Path:
        """The QMP monitor's unix socket."""
        return self._files.qmp_sock

    @property
    def key_path(self) -> Path:
        """The private key that logs in as root."""
        return self._files.key

    @property
    def running(self) -> bool:
        """Whether QEMU still runs."""
        return self._qemu_alive()

    @property
    def guest_failures(self) -> list[str]:
        """``numa-harness: ... FAILED`` lines (e.g. a module that did not load)."""
        return self._monitor.guest_failures() if self._monitor else []

    def _milestone(self, name: str) -> None:
        if self._on_milestone is not None:
            self._on_milestone(name)

    # -- console, liveness and problems -----------------------------------------------

    def _follow_console(self) -> None:
        self._monitor = ConsoleMonitor(self._files.console_log, on_milestone=self._milestone)
        self._monitor.start()
        self._follower = BootFollower(self._monitor, qemu_log=self._files.qemu_log,
                                      console_log=self._files.console_log, alive=self._qemu_alive,
                                      exit_status=self._exit_status, wait_exit=self._wait_exit,
                                      timeout_hint=self._timeout_hint, accel=self._accel_option())

    def _qemu_stderr(self) -> str:
        try:
            return self._files.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _abort_reason(self) -> HarnessError | None:
        if self._follower is None:
            return None if self._qemu_alive() else BootError("QEMU is no longer running")
        return self._follower.abort_reason()

    def check_health(self) -> None:
        """Raise a KernelProblem (GuestPanic if fatal) if the console showed one; BootError if QEMU is gone.

        An OOM kill is not a kernel problem: see :meth:`oom_kills`.
        """
        if self._monitor is None:
            raise BootError("the VM is not running")
        self._monitor.poll()
        problems = self._monitor.problems()
        if problems:
            raise problem_error(problems, log_hint=f"\n(console log: {self.console_log})")
        if not self._qemu_alive():
            raise BootError("QEMU is no longer running", detail=self._monitor.tail(30))

    def problems(self) -> list[Problem]:
        """Every kernel problem seen on the console so far."""
        return self._monitor.problems() if self._monitor else []

    def oom_kills(self) -> list[OomKill]:
        """Every OOM kill seen on the console so far."""
        return self._monitor.oom_kills() if self._monitor else []

    # -- using the guest -------------------------------------------------------------

    def _require_ssh(self) -> GuestSSH:
        if self._ssh is None or self.lifecycle not in _USABLE:
            raise GuestCommandError("the VM is not running", hint="start it first")
        return self._ssh

    def run(self, command: str, *, timeout: float = 600, check: bool = True,
            on_output: Callable[[str, bytes], None] | None = None, stdin: Stdin = None,
            via: str = "auto") -> CommandResult:
        """Run ``command`` in the guest as root (a shell command line).

        Raises GuestPanic within seconds if the guest panics meanwhile (QEMU exits),
        GuestFrozen if the guest stops answering, GuestCommandError on timeout or a
        lost connection; with ``check`` (the default, as everywhere: :mod:`harness.runner`),
        CommandFailed for a non-zero exit and CommandKilled for a signal (``oom_kills``
        says if the OOM killer did it); ``check=False`` returns the result to read.
        A killed command's result has ``signal`` set and ``exit_status`` 128+N.
        Oopses/WARNs that do not stop the guest are in ``result.problems``
        (and make :meth:`check_health` raise). ``on_output(stream, data)`` streams;
        ``stdin`` (bytes or a binary file) is the command's standard input.
        ``via`` (``auto``, ``channel``, ``exec``): see :meth:`harness.vm.ssh.GuestSSH.run`; ``auto``
        takes the VM's long-lived command channel unless the output is streamed.
        """
        ssh = self._require_ssh()
        before = self._monitor.problem_count if self._monitor else 0
        ooms_before = self._monitor.oom_count if self._monitor else 0
        live = Liveness(ssh, lambda: self._qmp, pid=self.pid, console_log=self.console_log)

        def sink(stream: str, data: bytes) -> None:
            live.saw_output()
            if on_output is not None:
                on_output(stream, data)

        def abort() -> BaseException | None:
            return self._abort_reason() or live.check()

        try:
            result = ssh.run(command, timeout=timeout, abort=abort, on_output=sink, stdin=stdin,
                             via="exec" if on_output is not None and via == "auto" else via)
        except GuestFrozen:
            self._keep_workdir = True  # the error names the console log: it must still be there
            raise
        except GuestCommandError:
            exc = self._abort_after_loss()
            if exc is not None:
                raise exc from None
            raise
        if self._monitor is not None:
            if result.signal == "KILL":  # the OOM report may still be on its way to the console
                self._monitor.wait(lambda: False, 0.5)
            self._monitor.poll()
            result.problems = self._monitor.problems(since=before)
            result.oom_kills = self._monitor.oom_kills(since=ooms_before)
        if check:
            err = command_error(result, result.oom_kills)
            if err is not None:
                raise err
        return result

    def _abort_after_loss(self) -> BaseException | None:
        """After SSH failed: give a dying QEMU a moment, then say why (or None)."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            exc = self._abort_reason()
            if exc is not None:
                return exc
            time.sleep(0.1)
        return None

    def shell(self) -> int:
        """An interactive root shell on the user's terminal; returns its exit status."""
        ssh = self._require_ssh()
        try:
            return ssh.shell(self._abort_reason)
        except GuestCommandError:
            exc = self._abort_after_loss()
            if exc is not None:
                raise exc from None
            raise

    def console_interact(self) -> None:
        """The serial console on the user's terminal until Ctrl-] (or QEMU exits)."""
        if not self._qemu_alive():
            raise BootError("the VM is not running")
        interact(self._files.console_sock, alive=self._qemu_alive)

    # -- shutdown --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the guest: poweroff, then QMP quit, then SIGKILL; release everything. Idempotent."""
        with self._lock:
            if self.lifecycle in _TERMINAL or self.lifecycle is Lifecycle.STOPPING:
                return
            if self.lifecycle is Lifecycle.CREATED:
                self.lifecycle = Lifecycle.STOPPED
                return
            self.lifecycle = Lifecycle.STOPPING
            try:
                self._stop(Lifecycle.STOPPED)
            finally:
                if self._own_workdir and not self.problems() and not self._keep_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop(self, final: Lifecycle) -> None:
        """Stop QEMU, release everything, drop the state file; end in lifecycle ``final``."""
        try:
            self._stop_qemu()
        except BaseException:  # Ctrl-C / an error mid-shutdown: still leave no QEMU
            self.kill_now()
            raise
        finally:
            self._release()
            self._remove_state()
            self.lifecycle = final

    def _stop_qemu(self) -> None:
        budget = self._shutdown_budget
        if self.pid and process.is_stopped(self.pid):  # a stopped QEMU answers neither SSH nor QMP
            self.kill_now()
            return
        if self._qemu_alive() and self._poweroff_guest():
            self._wait_exit(budget / 2)
        if self._qemu_alive() and self._qmp is not None:
            try:
                self._qmp.execute("quit", timeout=2)
            except QMPFailure:
                pass
            self._wait_exit(min(5.0, budget / 4))
        if self._qemu_alive():
            self.kill_now()

    def _poweroff_guest(self) -> bool:
        """Ask the guest to power off. True if the request went out."""
        if self._ssh is not None and self._ssh.connected:
            return self._ssh.send_poweroff("poweroff -f")
        if self._monitor is not None and self._monitor.seen(con.SSHD_READY) and self._files.console_sock.exists():
            try:
                with ConsoleSocket(self._files.console_sock, timeout=2) as c:
                    c.sendline("")
                    c.sendline("poweroff -f")
                    c.expect(r"reboot: Power down", timeout=2)
                return True
            except OSError:
                return False
        return False

    def _release(self) -> None:
        """Close host-side connections and threads (QEMU is left as it is)."""
        process.unregister(self)
        if self._ssh is not None:
            self._ssh.close()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._monitor is not None:
            self._monitor.stop()

    def _detach(self) -> None:
        """Let go of a running background VM: connections closed, QEMU left running."""
        with self._lock:
            self._release()
            self.lifecycle = Lifecycle.DETACHED

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- background VMs' state --------------------------------------------------------

    def state(self, phase: str = RUNNING) -> VMState:
        """This VM's state record (for ``vm.json``)."""
        return VMState(name=self.name, pid=self.pid, ssh_port=self.ssh_port,
                       key=str(self._files.key), console_log=str(self.console_log),
                       console_sock=str(self.console_sock), qmp_sock=str(self.qmp_sock),
                       workdir=str(self.workdir), qemu_binary=self.qemu_binary,
                       started_at=time.time() - (time.monotonic() - self._started_at),
                       boot_seconds=self.boot_seconds, phase=phase, owner_pid=os.getpid())

    def write_state(self, state_dir: Path | None = None, *, phase: str = RUNNING) -> Path:
        """Write :meth:`state` as ``vm.json`` into ``state_dir`` (default: where it was, or the work directory)."""
        directory = state_dir or (self._state_file.parent if self._state_file else self.workdir)
        self._state_file = write_state(directory, self.state(phase))
        return self._state_file

    def _remove_state(self) -> None:
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)
