"""One VM's life: launch QEMU, follow its boot, run commands, shut it down, leak nothing.

The pieces live next door; this module strings them together in :class:`VM`:

* :mod:`harness.vm.spec`: :class:`BootSpec`, :class:`Timeouts`, the QEMU argv (pure);
* :mod:`harness.vm.process`: spawning QEMU, its death signal, the registry of
  live VMs, killing by verified PID;
* :mod:`harness.vm.follow` and :mod:`harness.vm.diagnosis`: milestone waits and
  why a boot failed (a pure function of console text, QEMU stderr and exit status);
* :mod:`harness.vm.commands`: liveness while a command runs, what its end means;
* :mod:`harness.vm.state`: background VMs' state files and stopping by record.

Launch
    QEMU starts paused (``-S``) with its QMP monitor and serial console on unix
    sockets in the VM's work directory. The harness connects QMP (milestone
    ``qemu-up``), starts following ``console.log``, then sends ``cont``; no
    console byte is lost. Boot milestones are then awaited, each with its
    timeout (measured from ``cont``): ``kernel-started``, ``init-running``,
    ``sshd-ready`` and ``ssh-ready`` (an SSH login worked).

Size: over 400 lines because :class:`VM` is the one public object and keeps
its lifecycle transitions (start, fail, shutdown, close, attach) in one
place; what each step does lives in the modules above.

Lifecycle
    One explicit :class:`Lifecycle` state per VM object. ``VM(spec)`` and
    :meth:`VM.attach` both go through one internal constructor.

Shutdown (:meth:`VM.shutdown`, idempotent, every step bounded)
    1. ``poweroff -f`` in the guest, over SSH (or typed on the console if SSH
       is down but the guest's console shell is up); wait for QEMU to exit;
    2. QMP ``quit``; wait;
    3. SIGKILL; wait.
"""

from __future__ import annotations

import enum
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import BootError, GuestCommandError, HarnessError, VMStateError
from harness.vm import console as con
from harness.vm import process
from harness.vm.commands import Liveness, command_error
from harness.vm.console_log import ConsoleMonitor
from harness.vm.console_socket import ConsoleSocket, interact
from harness.vm.diagnosis import problem_error, qemu_error_lines
from harness.vm.follow import BootFollower
from harness.vm.keys import KeyPair, generate_keypair, load_keypair
from harness.vm.ports import hostfwd_bind_failed, pick_free_port, port_is_free
from harness.vm.problems import OomKill, Problem
from harness.vm.process import pid_alive, popen_qemu, terminate_process
from harness.vm.qmp import QMPFailure, SyncQMP
from harness.vm.spec import (
    BootSpec,
    Timeouts,
    WorkFiles,
    build_qemu_argv,
    check_machine_argv,
    kernel_cmdline,
    socket_path_problem,
)
from harness.vm.ssh import CommandResult, GuestSSH, Stdin
from harness.vm.state import BOOTING, RUNNING, STATE_FILE, VMState, read_state, write_state

__all__ = ["Timeouts", "BootSpec", "VM", "VMState", "CommandResult", "Lifecycle", "build_qemu_argv",
           "kernel_cmdline", "check_machine_argv", "socket_path_problem", "WorkFiles", "read_state",
           "STATE_FILE", "pid_alive", "popen_qemu", "terminate_process", "qemu_error_lines"]

PORT_ATTEMPTS = 3


class Lifecycle(enum.Enum):
    """Where one VM object is in its life."""

    CREATED = "created"  # VM(spec): nothing spawned yet
    STARTING = "starting"  # QEMU spawned, boot being followed
    RUNNING = "running"  # booted, owned by this process (a foreground VM dies with it)
    ATTACHED = "attached"  # a background VM this object talks to (after `up`'s boot, or VM.attach)
    STOPPING = "stopping"  # shutdown in progress
    STOPPED = "stopped"  # QEMU gone, everything released
    FAILED = "failed"  # start failed; QEMU gone; the work directory is kept for diagnosis
    DETACHED = "detached"  # let go of a background VM (close()); QEMU still runs


_TERMINAL = (Lifecycle.STOPPED, Lifecycle.FAILED, Lifecycle.DETACHED)


class VM:
    """A QEMU guest: ``start()`` boots to SSH, ``run()``/``shell()``, ``shutdown()``.

    Use as a context manager; ``__exit__`` always shuts down. The class prints
    nothing; ``on_milestone(name)`` is called for each milestone of
    :data:`harness.vm.console.MILESTONES` as it is reached (from a background
    thread for console milestones).
    """

    def __init__(self, spec: BootSpec, *, on_milestone: Callable[[str], None] | None = None) -> None:
        self._construct(spec=spec, record=None, state_dir=None, on_milestone=on_milestone)

    @classmethod
    def attach(cls, state_dir: Path, *, ssh_timeout: float = 15.0,
               on_milestone: Callable[[str], None] | None = None) -> VM:
        """Reconnect to a background VM from ``state_dir/vm.json`` (SSH, QMP, console log).

        VMStateError if there is none or its QEMU is gone (the state is kept, so
        ``harness down`` can clean it up). :meth:`close` lets go again;
        :meth:`shutdown` stops it.
        """
        st = read_state(state_dir)
        if not st.alive:
            raise VMStateError(f"the VM of {state_dir} is no longer running (QEMU pid {st.pid} is gone)",
                               hint=f"`harness down {st.name or state_dir.name}` removes it; "
                                    f"console log: {st.console_log}")
        vm = cls.__new__(cls)
        vm._construct(spec=None, record=st, state_dir=state_dir, on_milestone=on_milestone)
        try:
            vm._connect_attached(ssh_timeout)
        except BaseException:
            vm.close()
            raise
        return vm

    def _construct(self, *, spec: BootSpec | None, record: VMState | None, state_dir: Path | None,
                   on_milestone: Callable[[str], None] | None) -> None:
        """The one constructor: a VM to start (``spec``) or a running one to attach to (``record``)."""
        self.spec = spec
        self._on_milestone = on_milestone
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._qmp: SyncQMP | None = None
        self._ssh: GuestSSH | None = None
        self._follower: BootFollower | None = None
        self._monitor: ConsoleMonitor | None = None
        if record is not None:
            self.lifecycle = Lifecycle.ATTACHED
            self._own_workdir = False
            self.workdir = Path(record.workdir)
            self.ssh_port, self.pid, self.boot_seconds = record.ssh_port, record.pid, record.boot_seconds
            self._key: KeyPair | None = load_keypair(Path(record.key))
            self._started_at = time.monotonic() - (time.time() - record.started_at)
            self._state_file: Path | None = (state_dir or self.workdir) / STATE_FILE
        else:
            assert spec is not None
            self.lifecycle = Lifecycle.CREATED
            self._own_workdir = spec.workdir is None
            self.workdir = Path(tempfile.mkdtemp(prefix="numa-harness-")) if spec.workdir is None else spec.workdir
            self.ssh_port, self.pid, self.boot_seconds = spec.ssh_port or 0, 0, None
            self._key = None
            self._started_at = 0.0
            self._state_file = None
        self._files = WorkFiles(self.workdir)
        if record is not None:
            self._follow_console()

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
    def background(self) -> bool:
        """A background VM: it outlives this process (``BootSpec.detach``, or attached)."""
        return self.spec is None or self.spec.detach

    @property
    def guest_failures(self) -> list[str]:
        """``numa-harness: ... FAILED`` lines (e.g. a module that did not load)."""
        return self._monitor.guest_failures() if self._monitor else []

    def _milestone(self, name: str) -> None:
        if self._on_milestone is not None:
            self._on_milestone(name)

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Boot until an SSH login works. Raises BootError, GuestPanic (QEMU is gone then)."""
        if self.spec is None or self.lifecycle is not Lifecycle.CREATED:
            raise BootError(f"this VM cannot be started (it is {self.lifecycle.value})")
        self.lifecycle = Lifecycle.STARTING
        process.register(self)
        try:
            self._prepare()
            self._launch_with_port_retry()
            self._boot()
        except BaseException:
            self._fail()
            raise
        self.boot_seconds = time.monotonic() - self._started_at
        if self.spec.detach:
            process.unregister(self)
            self.lifecycle = Lifecycle.ATTACHED
            self.write_state()
        else:
            self.lifecycle = Lifecycle.RUNNING

    def _fail(self) -> None:
        """A start failed: stop QEMU, keep the work directory, drop the state file."""
        with self._lock:
            try:
                self._stop_qemu()
            except BaseException:
                self.kill_now()
                raise
            finally:
                self._release()
                self._remove_state()
                self.lifecycle = Lifecycle.FAILED

    def _prepare(self) -> None:
        assert self.spec is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        problem = socket_path_problem(self._files)
        if problem:
            raise BootError(f"work directory path too long: {problem}", hint="use a shorter --workdir")
        for stale in (self._files.console_sock, self._files.qmp_sock):
            stale.unlink(missing_ok=True)
        self._key = generate_keypair(self.workdir)
        given = self.spec.ssh_port
        if given and not port_is_free(given):
            raise _port_busy(given)

    def _launch_with_port_retry(self) -> None:
        assert self.spec is not None and self._key is not None
        given = self.spec.ssh_port
        cmdline = kernel_cmdline(self.spec.append, self.spec.modules, self._key.public_body)
        for _attempt in range(PORT_ATTEMPTS):
            self.ssh_port = given or pick_free_port()
            argv = build_qemu_argv(self.spec, self._files, self.ssh_port, cmdline)
            if self._launch(argv):
                return
            stderr = self._qemu_stderr()
            if hostfwd_bind_failed(stderr) is None:
                status = self._proc.returncode if self._proc is not None else None
                raise BootError(f"QEMU exited at once (status {status}): "
                                f"{_first_line(stderr) or 'no message'}",
                                hint="check the topology's QEMU options", detail=qemu_error_lines(stderr))
            if given:
                raise _port_busy(given)
        raise BootError(f"could not bind an SSH port on 127.0.0.1 after {PORT_ATTEMPTS} attempts",
                        detail=qemu_error_lines(self._qemu_stderr()))

    def _launch(self, argv: list[str]) -> bool:
        """Spawn paused QEMU and connect QMP. False if QEMU exited before QMP answered."""
        assert self.spec is not None
        try:
            self._proc = popen_qemu(argv, self._files.qemu_log, detach=self.spec.detach)
        except OSError as e:
            raise BootError(f"cannot run {argv[0]}: {e.strerror}",
                            hint="install QEMU (scripts/install-host-deps) or pass --qemu") from e
        self.pid = self._proc.pid
        self._started_at = time.monotonic()
        if self.spec.detach:
            self.write_state(phase=BOOTING)  # visible to status/down from now on
        limit = self.spec.timeouts.get("qemu_up")
        deadline = time.monotonic() + limit
        while self._proc.poll() is None:
            if self._files.qmp_sock.exists():
                self._check_qemu_is_child()
                qmp = SyncQMP(self._files.qmp_sock)
                try:
                    qmp.connect(timeout=2)
                    self._qmp = qmp
                    return True
                except QMPFailure:
                    qmp.close()
            if time.monotonic() > deadline:
                raise BootError(f"QEMU did not open its monitor within {limit:g} s",
                                detail=qemu_error_lines(self._qemu_stderr()))
            time.sleep(0.05)
        return False

    def _check_qemu_is_child(self) -> None:
        """Refuse a --qemu wrapper that runs QEMU as its child instead of exec'ing it."""
        assert self.spec is not None and self._proc is not None
        peer = process.socket_peer_pid(self._files.qmp_sock)
        if peer is not None and peer != self._proc.pid:
            raise BootError(f"{self.spec.qemu_binary} runs QEMU as a child (pid {peer}) instead of becoming it",
                            hint='end the wrapper with `exec qemu-system-x86_64 "$@"`: otherwise a killed '
                                 "harness cannot take QEMU with it")

    def _follow_console(self) -> None:
        self._monitor = ConsoleMonitor(self._files.console_log, on_milestone=self._milestone)
        self._monitor.start()
        self._follower = BootFollower(self._monitor, qemu_log=self._files.qemu_log,
                                      console_log=self._files.console_log, alive=self._qemu_alive,
                                      exit_status=self._exit_status, wait_exit=self._wait_exit,
                                      timeout_hint=self._timeout_hint, accel=self._accel_option())

    def _boot(self) -> None:
        assert self.spec is not None and self._qmp is not None and self._key is not None
        self._milestone(con.QEMU_UP)
        self._follow_console()
        assert self._follower is not None
        try:
            self._qmp.execute("cont")
        except QMPFailure as e:
            raise BootError(f"QEMU did not resume the guest: {e}",
                            detail=qemu_error_lines(self._qemu_stderr())) from e
        self._started_at = time.monotonic()
        t = self.spec.timeouts
        for milestone, name, what in ((con.KERNEL_STARTED, "kernel_started", "the kernel did not start"),
                                      (con.INIT_RUNNING, "init_running", "the guest's /init did not start"),
                                      (con.SSHD_READY, "ssh_ready", "the guest's sshd did not start")):
            limit = t.get(name)
            self._follower.await_milestone(milestone, self._started_at + limit, limit, what)
        self._ssh = GuestSSH(self.ssh_port, self._key)
        deadline = self._started_at + t.get("ssh_ready")
        try:
            self._ssh.connect(deadline, self._follower.boot_abort_reason)
        except GuestCommandError as e:
            raise self._follower.timeout_error(
                f"SSH login to the guest failed within {t.get('ssh_ready'):g} s", e.detail) from e
        self._milestone(con.SSH_READY)

    def _accel_option(self) -> str | None:
        """The value of ``-accel`` in the machine argv (``tcg,thread=multi``), if any."""
        argv = self.spec.machine_argv if self.spec else []
        return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-accel"), None)

    def _timeout_hint(self) -> str:
        scale = self.spec.timeouts.scale if self.spec else 1.0
        return (f"a slow host may need longer timeouts (scale now {scale:g}); "
                f"console log: {self.console_log}")

    # -- liveness and problems -----------------------------------------------------

    def _qemu_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid, str(self._files.qmp_sock))

    def _exit_status(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

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
        if self._ssh is None or self.lifecycle not in (Lifecycle.RUNNING, Lifecycle.ATTACHED):
            raise GuestCommandError("the VM is not running", hint="start it first")
        return self._ssh

    def run(self, command: str, *, timeout: float = 600, check: bool = True,
            on_output: Callable[[str, bytes], None] | None = None, stdin: Stdin = None) -> CommandResult:
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
        """
        ssh = self._require_ssh()
        before = self._monitor.problem_count if self._monitor else 0
        ooms_before = self._monitor.oom_count if self._monitor else 0
        live = Liveness(ssh, lambda: self._qmp)

        def sink(stream: str, data: bytes) -> None:
            live.saw_output()
            if on_output is not None:
                on_output(stream, data)

        def abort() -> BaseException | None:
            return self._abort_reason() or live.check()

        try:
            result = ssh.run(command, timeout=timeout, abort=abort, on_output=sink, stdin=stdin)
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

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(max(0.0, timeout))
                return True
            except subprocess.TimeoutExpired:
                return False
        return process.wait_gone(self.pid, str(self._files.qmp_sock), timeout)

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
                self._stop_qemu()
            except BaseException:  # Ctrl-C / an error mid-shutdown: still leave no QEMU
                self.kill_now()
                raise
            finally:
                self._release()
                self._remove_state()
                self.lifecycle = Lifecycle.STOPPED
                if self._own_workdir and not self.problems():
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_qemu(self) -> None:
        budget = self.spec.timeouts.get("shutdown") if self.spec else 30.0
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

    def kill_now(self) -> None:
        """SIGKILL QEMU and reap it (atexit, last shutdown step)."""
        if self._proc is not None:
            terminate_process(self._proc)
        elif self.pid:
            process.kill_verified(self.pid, str(self._files.qmp_sock))

    _kill_now = kill_now  # the old private name

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

    def close(self) -> None:
        """Let go of a background VM (detached or attached) without stopping it.

        For a foreground VM (or one whose start did not finish) this is :meth:`shutdown`.
        """
        with self._lock:
            if self.lifecycle is not Lifecycle.ATTACHED:
                self.shutdown()
                return
            self._release()
            self.lifecycle = Lifecycle.DETACHED

    def __enter__(self) -> VM:
        """Start the VM if :meth:`start` was not called yet (it cleans up if it fails)."""
        if self.lifecycle is Lifecycle.CREATED:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- background VMs ------------------------------------------------------------

    def state(self, phase: str = RUNNING) -> VMState:
        """This VM's state record (for ``vm.json``)."""
        import os

        return VMState(name=self.spec.name if self.spec else None, pid=self.pid, ssh_port=self.ssh_port,
                       key=str(self._files.key), console_log=str(self.console_log),
                       console_sock=str(self.console_sock), qmp_sock=str(self.qmp_sock),
                       workdir=str(self.workdir),
                       qemu_binary=self.spec.qemu_binary if self.spec else "",
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

    def _connect_attached(self, ssh_timeout: float) -> None:
        assert self._key is not None
        qmp = SyncQMP(self._files.qmp_sock)
        try:
            qmp.connect(timeout=3)
            self._qmp = qmp
        except QMPFailure:
            qmp.close()  # still usable over SSH; shutdown falls back to SIGKILL
        self._ssh = GuestSSH(self.ssh_port, self._key)
        try:
            self._ssh.connect(time.monotonic() + ssh_timeout, self._abort_reason)
        except GuestCommandError as e:
            raise GuestCommandError(f"cannot log in to the VM on 127.0.0.1:{self.ssh_port}",
                                    detail=e.detail) from e


def _port_busy(port: int) -> BootError:
    return BootError(f"port {port} on 127.0.0.1 is busy; choose another with --ssh-port or omit it")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
