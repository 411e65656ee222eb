"""One VM this process launched and owns: launch QEMU, follow its boot, shut it down, leak nothing.

The pieces live next door; this module strings them together in :class:`VM`:

* :mod:`harness.vm.link`: :class:`~harness.vm.link.GuestLink`, what an owned and an attached
  VM share: SSH commands and a shell, the console and its kernel problems, the ordered shutdown;
* :mod:`harness.vm.spec`: :class:`BootSpec`, :class:`Timeouts`, the QEMU argv (pure);
* :mod:`harness.vm.process`: spawning QEMU, its death signal, the registry of
  live VMs, killing by verified PID;
* :mod:`harness.vm.follow` and :mod:`harness.vm.diagnosis`: milestone waits and
  why a boot failed (a pure function of console text, QEMU stderr and exit status);
* :mod:`harness.vm.state`: background VMs' state files and stopping by record;
* :mod:`harness.vm.attached`: :class:`~harness.vm.attached.AttachedVM`, a background VM
  this process did not start, found by its state directory.

Launch
    QEMU starts paused (``-S``) with its QMP monitor and serial console on unix
    sockets in the VM's work directory. The harness connects QMP (milestone
    ``qemu-up``), starts following ``console.log``, then sends ``cont``; no
    console byte is lost. Boot milestones are then awaited, each with its
    timeout (measured from ``cont``): ``kernel-started``, ``init-running``,
    ``sshd-ready`` and ``ssh-ready`` (an SSH login worked).

Lifecycle
    One explicit :class:`Lifecycle` state per VM object: created, starting, running, then
    stopped (or failed: the work directory is kept for diagnosis). A background VM
    (``BootSpec.detach``) is running until :meth:`VM.close` lets go of it (detached).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import BootError, GuestCommandError
from harness.hints import APT_QEMU
from harness.vm import console as con
from harness.vm import process
from harness.vm.diagnosis import qemu_error_lines
from harness.vm.keys import generate_keypair, load_keypair
from harness.vm.link import GuestLink, Lifecycle
from harness.vm.ports import hostfwd_bind_failed, pick_free_port, port_is_free
from harness.vm.process import pid_alive, popen_qemu, terminate_process
from harness.vm.qmp import QMPFailure, SyncQMP, qmp_command
from harness.vm.snapshot import load_state, save_state
from harness.vm.spec import (
    BootSpec,
    Timeouts,
    WorkFiles,
    build_qemu_argv,
    check_machine_argv,
    kernel_cmdline,
    socket_path_problem,
)
from harness.vm.ssh import CommandResult, GuestSSH
from harness.vm.state import BOOTING, STATE_FILE, VMState, read_state

__all__ = ["Timeouts", "BootSpec", "VM", "VMState", "CommandResult", "Lifecycle", "build_qemu_argv",
           "kernel_cmdline", "check_machine_argv", "socket_path_problem", "WorkFiles", "read_state",
           "STATE_FILE", "pid_alive", "popen_qemu", "terminate_process", "qemu_error_lines"]

PORT_ATTEMPTS = 3


class VM(GuestLink):
    """A QEMU guest this process launches: ``start()`` boots to SSH, ``run()``/``shell()``, ``shutdown()``.

    Use as a context manager: entering starts it (if :meth:`start` was not called yet),
    ``__exit__`` always shuts down.
    """

    def __init__(self, spec: BootSpec, *, on_milestone: Callable[[str], None] | None = None) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="numa-harness-")) if spec.workdir is None else spec.workdir
        super().__init__(workdir, Lifecycle.CREATED, name=spec.name, qemu_binary=spec.qemu_binary,
                         shutdown_budget=spec.timeouts.get("shutdown"), on_milestone=on_milestone)
        self.spec = spec
        self._own_workdir = spec.workdir is None
        self.ssh_port = spec.ssh_port or 0
        self._proc: subprocess.Popen | None = None
        self.qemu_argv: list[str] = []  # the full QEMU command line, once launched

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Boot until an SSH login works. Raises BootError, GuestPanic (QEMU is gone then)."""
        if self.lifecycle is not Lifecycle.CREATED:
            raise BootError(f"this VM cannot be started (it is {self.lifecycle.value})")
        self.lifecycle = Lifecycle.STARTING
        process.register(self)
        try:
            self._prepare()
            self._launch_with_port_retry()
            if self.spec.incoming is not None:
                self._restore(self.spec.incoming)
            else:
                self._boot()
        except BaseException:
            self._fail()
            raise
        self.boot_seconds = time.monotonic() - self._started_at
        self.lifecycle = Lifecycle.RUNNING
        if self.spec.detach:
            process.unregister(self)
            self.write_state()

    def _fail(self) -> None:
        """A start failed: stop QEMU, keep the work directory, drop the state file."""
        with self._lock:
            self._stop(Lifecycle.FAILED)

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        problem = socket_path_problem(self._files)
        if problem:
            raise BootError(f"work directory path too long: {problem}", hint="use a shorter --workdir")
        for stale in (self._files.console_sock, self._files.qmp_sock):
            stale.unlink(missing_ok=True)
        if self.spec.key is not None:
            shutil.copy2(self.spec.key, self._files.key)
            shutil.copy2(f"{self.spec.key}.pub", f"{self._files.key}.pub")
            self._key = load_keypair(self._files.key)
        else:
            self._key = generate_keypair(self.workdir)
        given = self.spec.ssh_port
        if given and not port_is_free(given):
            raise _port_busy(given)

    def _launch_with_port_retry(self) -> None:
        assert self._key is not None
        given = self.spec.ssh_port
        cmdline = kernel_cmdline(self.spec.append, self.spec.modules, self._key.public_body)
        for _attempt in range(PORT_ATTEMPTS):
            self.ssh_port = given or pick_free_port()
            argv = build_qemu_argv(self.spec, self._files, self.ssh_port, cmdline)
            self.qemu_argv = argv
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
        try:
            self._proc = popen_qemu(argv, self._files.qemu_log, detach=self.spec.detach)
        except OSError as e:
            raise BootError(f"cannot run {argv[0]}: {e.strerror}",
                            hint=f"{APT_QEMU}; or pass --qemu") from e
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
        assert self._proc is not None
        peer = process.socket_peer_pid(self._files.qmp_sock)
        if peer is not None and peer != self._proc.pid:
            raise BootError(f"{self.spec.qemu_binary} runs QEMU as a child (pid {peer}) instead of becoming it",
                            hint='end the wrapper with `exec qemu-system-x86_64 "$@"`: otherwise a killed '
                                 "harness cannot take QEMU with it")

    def _boot(self) -> None:
        assert self._qmp is not None and self._key is not None
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

    def _restore(self, state_file: Path) -> None:
        """Load a snapshot's device state into the paused QEMU, resume it, log in over SSH."""
        assert self._qmp is not None and self._key is not None
        self._milestone(con.QEMU_UP)
        self._follow_console()
        assert self._follower is not None
        t = self.spec.timeouts
        load_state(self._qmp, state_file, timeout=t.get("kernel_started"))
        try:
            self._qmp.execute("cont")
        except QMPFailure as e:
            raise BootError(f"QEMU did not resume the restored guest: {e}",
                            detail=qemu_error_lines(self._qemu_stderr())) from e
        self._started_at = time.monotonic()
        self._ssh = GuestSSH(self.ssh_port, self._key)
        try:
            self._ssh.connect(self._started_at + t.get("ssh_ready"), self._follower.boot_abort_reason,
                              interval=0.05)
        except GuestCommandError as e:
            raise self._follower.timeout_error(
                f"SSH login to the restored guest failed within {t.get('ssh_ready'):g} s", e.detail) from e
        self._milestone(con.SSH_READY)

    def _accel_option(self) -> str | None:
        argv = self.spec.machine_argv
        return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-accel"), None)

    def _timeout_hint(self) -> str:
        return (f"a slow host may need longer timeouts (scale now {self.spec.timeouts.scale:g}); "
                f"console log: {self.console_log}")

    # -- the QEMU process ---------------------------------------------------------------

    def _qemu_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _exit_status(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is None:
            return True
        try:
            self._proc.wait(max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    def save_snapshot(self, state_file: Path, *, timeout: float = 120) -> None:
        """End this VM as a snapshot: close SSH (the guest keeps no session), write the device
        state to ``state_file`` (:func:`harness.vm.snapshot.save_state`; the RAM must be in shared
        files, see :func:`~harness.vm.snapshot.ram_files_argv`), then end QEMU."""
        with self._lock:
            if self._qmp is None or self.lifecycle is not Lifecycle.RUNNING:
                raise BootError("only a running VM can be saved as a snapshot")
            if self._ssh is not None:
                self._ssh.close()
                time.sleep(0.3)  # the guest's sshd sees the connection end before the guest stops
            save_state(self._qmp, state_file, timeout=timeout)
            try:
                self._qmp.execute("quit", timeout=5)
            except QMPFailure:
                pass
            self._wait_exit(10)
        self.shutdown()

    def kill_now(self) -> None:
        """SIGKILL QEMU and reap it (atexit, last shutdown step)."""
        if self._proc is not None:
            terminate_process(self._proc)

    # -- monitor -----------------------------------------------------------------------

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
        """Send a QMP command to this VM's QEMU (``device_del``, ``cxl-inject-poison``, ...) and return
        its ``return`` value. Raises QMPCommandError with QEMU's message if it refuses."""
        return qmp_command(self._qmp, command, arguments, timeout=timeout)

    # -- end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of a running background VM (``BootSpec.detach``) and leave it running.

        For a foreground VM (or one whose start did not finish) this is :meth:`shutdown`.
        """
        if self.spec.detach and self.lifecycle is Lifecycle.RUNNING:
            self._detach()
        else:
            self.shutdown()

    def __enter__(self) -> VM:
        """Start the VM if :meth:`start` was not called yet (it cleans up if it fails)."""
        if self.lifecycle is Lifecycle.CREATED:
            self.start()
        return self


def _port_busy(port: int) -> BootError:
    return BootError(f"port {port} on 127.0.0.1 is busy; choose another with --ssh-port or omit it")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
