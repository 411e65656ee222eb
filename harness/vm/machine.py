"""One VM's life: launch QEMU, follow its boot, run commands, shut it down, leak nothing.

Launch
    QEMU starts paused (``-S``) with its QMP monitor and serial console on unix
    sockets in the VM's work directory. The harness connects QMP (milestone
    ``qemu-up``: QEMU parsed its command line and built the machine), starts
    following ``console.log`` (written by QEMU itself, see
    :mod:`harness.vm.console`), then sends ``cont``; no console byte is lost.
    Boot milestones are then awaited, each with its timeout (measured from
    ``cont``): ``kernel-started`` (the ``Linux version`` line),
    ``init-running``, then ``sshd-ready`` and ``ssh-ready`` (an SSH login
    worked). A kernel panic, QEMU exiting, a ``KVM internal error`` or the
    guest's /init reporting that network or sshd failed end the wait at once.

Shutdown (:meth:`VM.shutdown`, idempotent, every step bounded)
    1. ``poweroff -f`` in the guest, over SSH (or typed on the console if SSH
       is down but the guest's console shell is up); wait for QEMU to exit;
    2. QMP ``quit``; wait;
    3. SIGKILL; wait.

No QEMU outlives its owner
    * foreground VMs: the child gets ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so
      even a SIGKILLed harness takes QEMU with it (caveat: the signal fires when
      the *thread* that started QEMU exits: start VMs from a thread that lives
      as long as they do, normally the main thread);
    * every live foreground VM is registered; ``atexit`` kills what is left,
      and SIGTERM/SIGHUP (if nobody else handles them) raise ``SystemExit`` in
      the main thread so ``with VM(...)`` blocks unwind and shut down;
    * any exception (Ctrl-C included) inside :meth:`VM.start` shuts QEMU down
      before it propagates; ``__exit__`` always shuts down;
    * QEMU runs in its own session, so a Ctrl-C on the terminal reaches the
      harness (which shuts down in order) and not QEMU directly.
    Background VMs (``BootSpec.detach``) skip the death signal and the
    registry once :meth:`VM.start` succeeded; their state goes to a JSON file
    (:meth:`VM.write_state`) and :meth:`VM.attach` finds them again.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BootError, GuestCommandError, GuestPanic, VMStateError
from harness.guest.protocol import GUEST_GW, GUEST_IP, guest_cmdline
from harness.vm import console as con
from harness.vm.ports import hostfwd_bind_failed, pick_free_port, port_is_free
from harness.vm.qmp import QMPFailure, SyncQMP
from harness.vm.ssh import CommandResult, GuestSSH, KeyPair, generate_keypair, load_keypair

__all__ = ["Timeouts", "BootSpec", "VM", "VMState", "CommandResult", "build_qemu_argv", "kernel_cmdline",
           "read_state", "STATE_FILE"]

STATE_FILE = "vm.json"
STATE_VERSION = 1
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the NUL
PORT_ATTEMPTS = 3
CONSOLE_TAIL = 30

#: Options the VM adds itself; a machine_argv carrying one is a bug upstream.
RESERVED_OPTIONS = frozenset({"-kernel", "-initrd", "-append", "-serial", "-qmp", "-monitor", "-mon",
                              "-netdev", "-nic", "-net", "-display", "-nographic", "-S", "-daemonize",
                              "-no-reboot", "-nodefaults", "-pidfile"})


# --------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------


@dataclass
class Timeouts:
    """Seconds allowed per milestone, sized for TCG on a 2-core host; ``scale`` multiplies all.

    ``qemu_up`` counts from spawning QEMU; the boot milestones count from the
    moment the paused guest is resumed; ``shutdown`` is the whole shutdown.
    """

    qemu_up: float = 10
    kernel_started: float = 30
    init_running: float = 90
    ssh_ready: float = 120
    shutdown: float = 30
    scale: float = 1.0

    def get(self, name: str) -> float:
        """Timeout ``name`` (a field name) times ``scale``."""
        return float(getattr(self, name)) * self.scale


@dataclass
class BootSpec:
    """Everything needed to boot one VM."""

    machine_argv: list[str]  # -machine/-m/-smp/-cpu/-accel/-object/-numa/-device ... only
    kernel: Path
    initrd: Path
    append: str = ""  # topology's kernel parameters; the VM adds console, panic, harness.*
    modules: list[str] = field(default_factory=list)  # -> harness.modules=
    qemu_binary: str = "qemu-system-x86_64"
    workdir: Path | None = None  # console.log, sockets, key; None = a fresh temp dir
    ssh_port: int | None = None  # None = pick a free 127.0.0.1 port
    timeouts: Timeouts = field(default_factory=Timeouts)
    detach: bool = False  # background VM (harness up): survives the starting process
    name: str | None = None  # -name, and the name in state files


# --------------------------------------------------------------------------
# Pure assembly
# --------------------------------------------------------------------------


def kernel_cmdline(append: str, modules: list[str], ssh_key_body: str) -> str:
    """The guest kernel command line: the topology's ``append``, then the harness's own.

    The harness's parameters come last so they win over a repeated one
    (``panic=-1``: a panic reboots, and ``-no-reboot`` turns that into QEMU
    exiting; oopses are detected on the console, not made fatal).
    """
    parts = [append.strip()] if append.strip() else []
    parts += ["console=ttyS0,115200", "panic=-1"]
    parts += guest_cmdline(modules=modules, sshkey=ssh_key_body, ip=GUEST_IP, gw=GUEST_GW)
    return " ".join(parts)


def _opt_path(path: Path) -> str:
    """A path inside a QEMU ``key=value,...`` option (commas doubled)."""
    return str(path).replace(",", ",,")


@dataclass(frozen=True)
class WorkFiles:
    """The files of one VM in its work directory."""

    workdir: Path

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def console_sock(self) -> Path:
        return self.workdir / "console.sock"

    @property
    def qmp_sock(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"


def check_machine_argv(argv: list[str]) -> None:
    """ValueError if ``argv`` has an option the VM adds itself (pure)."""
    bad = sorted({a for a in argv if a in RESERVED_OPTIONS})
    if bad:
        raise ValueError(f"machine_argv must not contain {', '.join(bad)} (the VM adds them)")


def build_qemu_argv(spec: BootSpec, files: WorkFiles, ssh_port: int, cmdline: str) -> list[str]:
    """QEMU's full command line for ``spec`` (pure)."""
    check_machine_argv(spec.machine_argv)
    argv = [spec.qemu_binary, *spec.machine_argv]
    if spec.name:
        argv += ["-name", spec.name.replace(",", ",,")]
    argv += [
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", cmdline,
        "-chardev", (f"socket,id=hcon0,path={_opt_path(files.console_sock)},server=on,wait=off,"
                     f"logfile={_opt_path(files.console_log)},logappend=off"),
        "-serial", "chardev:hcon0",
        "-chardev", f"socket,id=hqmp0,path={_opt_path(files.qmp_sock)},server=on,wait=off",
        "-mon", "chardev=hqmp0,mode=control",
        "-netdev", f"user,id=hnet0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=hnet0,bus=pcie.0",  # explicit: else QEMU may pick a CXL bus
        "-S",
    ]
    return argv


def socket_path_problem(files: WorkFiles) -> str | None:
    """Why the work directory is unusable for unix sockets (path too long), or None."""
    longest = max((files.console_sock, files.qmp_sock), key=lambda p: len(str(p)))
    if len(os.fsencode(str(longest))) > MAX_SOCKET_PATH:
        return f"{longest} is longer than the {MAX_SOCKET_PATH} bytes a unix socket path may have"
    return None


def qemu_error_lines(text: str) -> str:
    """QEMU's stderr, trimmed to what a user needs to read (pure)."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-20:])


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _pdeathsig_preexec(parent: int) -> Callable[[], None]:
    """preexec_fn for the child: die with SIGKILL when the parent (thread) dies."""
    prctl = _prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def popen_qemu(argv: list[str], log: Path, *, detach: bool) -> subprocess.Popen:
    """Start QEMU in its own session, stdout+stderr to ``log``; tied to us unless ``detach``."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True,
                                preexec_fn=None if detach else _pdeathsig_preexec(os.getpid()))


def terminate_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGKILL ``proc`` if it still runs, and reap it."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, has ``marker`` in its command line."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return False
        if marker is None:
            return True
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except (OSError, IndexError):
        return False


_LIVE: weakref.WeakSet[VM] = weakref.WeakSet()
_HOOKS_INSTALLED = False
_HOOK_LOCK = threading.Lock()


def _kill_live_vms() -> None:
    for vm in list(_LIVE):
        vm._kill_now()


def _on_terminate(signum: int, frame: object) -> None:
    # Unwind the main thread: `with VM(...)` blocks and start() shut down on the way.
    raise SystemExit(128 + signum)


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    with _HOOK_LOCK:
        if _HOOKS_INSTALLED:
            return
        _HOOKS_INSTALLED = True
        atexit.register(_kill_live_vms)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, _on_terminate)


# --------------------------------------------------------------------------
# State of background VMs
# --------------------------------------------------------------------------


@dataclass
class VMState:
    """What ``harness up`` leaves behind for ``ssh``/``status``/``down`` (JSON round-trips)."""

    name: str | None
    pid: int
    ssh_port: int
    key: str
    console_log: str
    console_sock: str
    qmp_sock: str
    workdir: str
    qemu_binary: str
    started_at: float
    boot_seconds: float | None = None
    version: int = STATE_VERSION

    def to_json(self) -> str:
        """JSON text."""
        return json.dumps(self.__dict__, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VMState:
        """Parse :meth:`to_json`'s output; ValueError if it is not a state file."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a numa-harness VM state file of this version")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def alive(self) -> bool:
        """Whether that QEMU still runs (checks the pid really is that QEMU)."""
        return pid_alive(self.pid, self.qmp_sock)


def read_state(state_dir: Path) -> VMState:
    """The state in ``state_dir/vm.json``; VMStateError if absent or unreadable."""
    path = state_dir / STATE_FILE
    try:
        return VMState.from_json(path.read_text())
    except FileNotFoundError as e:
        raise VMStateError(f"no VM state in {state_dir}", hint="start one with `harness up`") from e
    except (OSError, ValueError, TypeError) as e:
        raise VMStateError(f"unreadable VM state {path}: {e}") from e


# --------------------------------------------------------------------------
# The VM
# --------------------------------------------------------------------------


class VM:
    """A QEMU guest: ``start()`` boots to SSH, ``run()``/``shell()``, ``shutdown()``.

    Use as a context manager; ``__exit__`` always shuts down. The class prints
    nothing; ``on_milestone(name)`` is called for each milestone of
    :data:`harness.vm.console.MILESTONES` as it is reached (from a background
    thread for console milestones).
    """

    def __init__(self, spec: BootSpec, *, on_milestone: Callable[[str], None] | None = None) -> None:
        self.spec: BootSpec | None = spec
        self._on_milestone = on_milestone
        self._own_workdir = spec.workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="numa-harness-")) if spec.workdir is None else spec.workdir
        self._files = WorkFiles(self.workdir)
        self.ssh_port: int = spec.ssh_port or 0
        self.pid: int = 0
        self.boot_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._owner = True  # False for an attached VM (we are not QEMU's parent)
        self._detached = spec.detach
        self._qmp: SyncQMP | None = None
        self._monitor: con.ConsoleMonitor | None = None
        self._ssh: GuestSSH | None = None
        self._key: KeyPair | None = None
        self._started_at = 0.0
        self._failed = False
        self._done = False
        self._lock = threading.RLock()
        self._state_file: Path | None = None

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

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Boot until an SSH login works. Raises BootError, GuestPanic (QEMU is gone then)."""
        if self.spec is None or self._proc is not None or self._done:
            raise BootError("this VM was already started")
        _install_hooks()
        _LIVE.add(self)
        try:
            self._prepare()
            self._launch_with_port_retry()
            self._boot()
        except BaseException:
            self._failed = True
            self.shutdown()
            raise
        self.boot_seconds = time.monotonic() - self._started_at
        if self._detached:
            _LIVE.discard(self)

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        problem = socket_path_problem(self._files)
        if problem:
            raise BootError(f"work directory path too long: {problem}", hint="use a shorter --workdir")
        for stale in (self._files.console_sock, self._files.qmp_sock):
            stale.unlink(missing_ok=True)
        self._key = generate_keypair(self.workdir)
        given = self.spec.ssh_port if self.spec else None
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
            self._proc = popen_qemu(argv, self._files.qemu_log, detach=self._detached)
        except OSError as e:
            raise BootError(f"cannot run {argv[0]}: {e.strerror}",
                            hint="install QEMU (scripts/install-host-deps) or pass --qemu") from e
        self.pid = self._proc.pid
        limit = self.spec.timeouts.get("qemu_up")
        deadline = time.monotonic() + limit
        while self._proc.poll() is None:
            if self._files.qmp_sock.exists():
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

    def _boot(self) -> None:
        assert self.spec is not None and self._qmp is not None and self._key is not None
        self._milestone(con.QEMU_UP)
        self._monitor = con.ConsoleMonitor(self._files.console_log, on_milestone=self._milestone)
        self._monitor.start()
        try:
            self._qmp.execute("cont")
        except QMPFailure as e:
            raise BootError(f"QEMU did not resume the guest: {e}",
                            detail=qemu_error_lines(self._qemu_stderr())) from e
        self._started_at = time.monotonic()
        t = self.spec.timeouts
        self._await_console(con.KERNEL_STARTED, t.get("kernel_started"), "the kernel did not start")
        self._await_console(con.INIT_RUNNING, t.get("init_running"), "the guest's /init did not start")
        self._await_console(con.SSHD_READY, t.get("ssh_ready"), "the guest's sshd did not start")
        self._ssh = GuestSSH(self.ssh_port, self._key)
        deadline = self._started_at + t.get("ssh_ready")
        try:
            self._ssh.connect(deadline, self._abort_reason)
        except GuestCommandError as e:
            raise self._timeout_error(f"SSH login to the guest failed within {t.get('ssh_ready'):g} s",
                                      e.detail) from e
        self._milestone(con.SSH_READY)

    def _await_console(self, milestone: str, limit: float, what: str) -> None:
        assert self._monitor is not None
        deadline = self._started_at + limit
        mon = self._monitor
        while not mon.seen(milestone):
            exc = self._abort_reason()
            if exc is not None:
                raise exc
            failure = self._fatal_guest_failure()
            if failure:
                raise BootError(f"the guest reported: {failure}",
                                hint="see the console log", detail=self._console_detail())
            if time.monotonic() > deadline:
                raise self._timeout_error(f"{what} within {limit:g} s (no '{milestone}' milestone)")
            mon.wait(lambda: mon.seen(milestone), min(0.25, max(0.0, deadline - time.monotonic())))

    def _fatal_guest_failure(self) -> str | None:
        """A ``network FAILED``/``sshd FAILED`` line: SSH will never come."""
        for line in self.guest_failures:
            msg = con.guest_message(line) or ""
            if msg.lower().startswith(("network", "sshd")):
                return msg
        return None

    def _timeout_error(self, message: str, extra: str | None = None) -> BootError:
        """A milestone timed out: a GuestPanic if the console shows a kernel problem."""
        problems = self._monitor.problems() if self._monitor else []
        if problems:
            msg, detail = con.describe_problems(problems)
            return GuestPanic(f"{msg} ({message})", detail=detail + self._log_hint())
        detail = self._console_detail()
        if extra:
            detail = f"{extra}\n{detail}"
        return BootError(message, hint=self._timeout_hint(), detail=detail)

    def _timeout_hint(self) -> str:
        scale = self.spec.timeouts.scale if self.spec else 1.0
        return (f"a slow host may need longer timeouts (scale now {scale:g}); "
                f"console log: {self.console_log}")

    # -- liveness and problems -----------------------------------------------------

    def _qemu_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        if self.pid:
            return pid_alive(self.pid, str(self._files.qmp_sock))
        return False

    def _qemu_stderr(self) -> str:
        try:
            return self._files.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _kvm_error(self) -> str | None:
        text = self._qemu_stderr()
        for line in text.splitlines():
            if "KVM internal error" in line:
                return line.strip()
        return None

    def _abort_reason(self) -> BaseException | None:
        """Why waiting on the guest is pointless now (panic, QEMU gone, KVM error), or None."""
        mon = self._monitor
        problems = mon.problems() if mon else []
        fatal = any(p.fatal for p in problems)
        alive = self._qemu_alive()
        if not fatal and alive:
            kvm = self._kvm_error()
            if kvm:
                return BootError(f"KVM could not run the guest: {kvm}", hint="use --accel tcg",
                                 detail=self._console_detail())
            return None
        if alive:  # a panic: QEMU is about to exit; let the console catch up
            self._wait_exit(3.0)
        if mon:
            mon.poll()
            problems = mon.problems()
        if problems:
            msg, detail = con.describe_problems(problems)
            return GuestPanic(msg, detail=detail + self._log_hint())
        status = self._proc.returncode if self._proc is not None else None
        stderr = qemu_error_lines(self._qemu_stderr())
        detail = (f"QEMU said:\n{stderr}\n" if stderr else "") + self._console_detail()
        return BootError(f"QEMU exited unexpectedly (status {status})", detail=detail,
                         hint=f"console log: {self.console_log}")

    def _console_detail(self) -> str:
        tail = self._monitor.tail(CONSOLE_TAIL) if self._monitor else ""
        return f"last console lines:\n{tail}" if tail else "(no console output)"

    def _log_hint(self) -> str:
        return f"\n(console log: {self.console_log})"

    def check_health(self) -> None:
        """Raise GuestPanic if the console showed a panic/oops/BUG/WARN; BootError if QEMU is gone."""
        if self._monitor is None:
            raise BootError("the VM is not running")
        self._monitor.poll()
        problems = self._monitor.problems()
        if problems:
            msg, detail = con.describe_problems(problems)
            raise GuestPanic(msg, detail=detail + self._log_hint())
        if not self._qemu_alive():
            raise BootError("QEMU is no longer running", detail=self._console_detail())

    def problems(self) -> list[con.Problem]:
        """Every kernel problem seen on the console so far."""
        return self._monitor.problems() if self._monitor else []

    # -- using the guest -------------------------------------------------------------

    def _require_ssh(self) -> GuestSSH:
        if self._ssh is None or self._done:
            raise GuestCommandError("the VM is not running", hint="start it first")
        return self._ssh

    def run(self, command: str, *, timeout: float = 600, check: bool = False,
            on_output: Callable[[str, bytes], None] | None = None) -> CommandResult:
        """Run ``command`` in the guest as root (a shell command line).

        Raises GuestPanic within seconds if the guest panics meanwhile (QEMU exits),
        GuestCommandError on timeout, lost connection, or (``check``) a non-zero
        exit. Oopses/WARNs that do not stop the guest are in ``result.problems``
        (and make :meth:`check_health` raise). ``on_output(stream, data)`` streams.
        """
        ssh = self._require_ssh()
        before = self._monitor.problem_count if self._monitor else 0
        try:
            result = ssh.run(command, timeout=timeout, abort=self._abort_reason, on_output=on_output)
        except GuestCommandError:
            exc = self._abort_after_loss()
            if exc is not None:
                raise exc from None
            raise
        if self._monitor is not None:
            self._monitor.poll()
            result.problems = self._monitor.problems(since=before)
        if check and result.exit_status != 0:
            raise GuestCommandError(f"guest command exited with status {result.exit_status}: {command}",
                                    detail=_tail(result.stderr or result.stdout))
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
        con.interact(self._files.console_sock, alive=self._qemu_alive)

    # -- shutdown --------------------------------------------------------------------

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._proc is not None:
            try:
                self._proc.wait(max(0.0, timeout))
                return True
            except subprocess.TimeoutExpired:
                return False
        while time.monotonic() < deadline:
            if not self._qemu_alive():
                return True
            time.sleep(0.05)
        return not self._qemu_alive()

    def shutdown(self) -> None:
        """Stop the guest: poweroff, then QMP quit, then SIGKILL; release everything. Idempotent."""
        with self._lock:
            if self._done:
                return
            self._done = True
            try:
                self._stop_qemu()
            except BaseException:  # Ctrl-C / an error mid-shutdown: still leave no QEMU
                self._kill_now()
                raise
            finally:
                self._release()
                self._remove_state()
                if self._own_workdir and not self._failed and not self.problems():
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
            self._kill_now()

    def _poweroff_guest(self) -> bool:
        """Ask the guest to power off. True if the request went out."""
        if self._ssh is not None and self._ssh.connected:
            return self._ssh.send_poweroff("poweroff -f")
        if self._monitor is not None and self._monitor.seen(con.SSHD_READY) and self._files.console_sock.exists():
            try:
                with con.ConsoleSocket(self._files.console_sock, timeout=2) as c:
                    c.sendline("")
                    c.sendline("poweroff -f")
                    c.expect(r"reboot: Power down", timeout=2)
                return True
            except OSError:
                return False
        return False

    def _kill_now(self) -> None:
        """SIGKILL QEMU and reap it (atexit, last shutdown step)."""
        if self._proc is not None:
            terminate_process(self._proc)
        elif self.pid and self._qemu_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_exit(5.0)

    def _release(self) -> None:
        """Close host-side connections and threads (QEMU is left as it is)."""
        _LIVE.discard(self)
        if self._ssh is not None:
            self._ssh.close()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._monitor is not None:
            self._monitor.stop()

    def close(self) -> None:
        """Let go of a background VM (detached or attached) without stopping it.

        For a foreground VM this is :meth:`shutdown`.
        """
        if not (self._detached or not self._owner) or self._failed:
            self.shutdown()
            return
        with self._lock:
            if not self._done:
                self._done = True
                self._release()

    def __enter__(self) -> VM:
        """Start the VM if :meth:`start` was not called yet (it cleans up if it fails)."""
        if self._proc is None and self._owner and not self._done:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- background VMs ------------------------------------------------------------

    def state(self) -> VMState:
        """This VM's state record."""
        return VMState(name=self.spec.name if self.spec else None, pid=self.pid, ssh_port=self.ssh_port,
                       key=str(self._files.key), console_log=str(self.console_log),
                       console_sock=str(self.console_sock), qmp_sock=str(self.qmp_sock),
                       workdir=str(self.workdir),
                       qemu_binary=self.spec.qemu_binary if self.spec else "",
                       started_at=time.time() - (time.monotonic() - self._started_at),
                       boot_seconds=self.boot_seconds)

    def write_state(self, state_dir: Path | None = None) -> Path:
        """Write :meth:`state` as ``vm.json`` into ``state_dir`` (default: the work directory)."""
        directory = state_dir or self.workdir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(self.state().to_json())
        os.replace(tmp, path)
        self._state_file = path
        return path

    def _remove_state(self) -> None:
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)

    @classmethod
    def attach(cls, state_dir: Path, *, ssh_timeout: float = 15.0,
               on_milestone: Callable[[str], None] | None = None) -> VM:
        """Reconnect to a background VM from ``state_dir/vm.json`` (SSH, QMP, console log).

        VMStateError if there is none or its QEMU is gone (the stale state file is
        then removed). :meth:`close` lets go again; :meth:`shutdown` stops it.
        """
        st = read_state(state_dir)
        if not st.alive:
            (state_dir / STATE_FILE).unlink(missing_ok=True)
            raise VMStateError(f"the VM of {state_dir} is no longer running (pid {st.pid})",
                               hint=f"its console log is {st.console_log}")
        vm = cls.__new__(cls)
        vm._init_attached(st, state_dir, on_milestone)
        try:
            vm._connect_attached(ssh_timeout)
        except BaseException:
            vm.close()
            raise
        return vm

    def _init_attached(self, st: VMState, state_dir: Path, on_milestone: Callable[[str], None] | None) -> None:
        self.spec = None
        self._on_milestone = on_milestone
        self._own_workdir = False
        self.workdir = Path(st.workdir)
        self._files = WorkFiles(self.workdir)
        self.ssh_port, self.pid = st.ssh_port, st.pid
        self.boot_seconds = st.boot_seconds
        self._proc = None
        self._owner = False
        self._detached = True
        self._qmp = None
        self._ssh = None
        self._key = load_keypair(Path(st.key))
        self._started_at = time.monotonic() - (time.time() - st.started_at)
        self._failed = self._done = False
        self._lock = threading.RLock()
        self._state_file = state_dir / STATE_FILE
        self._monitor = con.ConsoleMonitor(self._files.console_log)
        self._monitor.start()

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


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.splitlines()[-n:])
