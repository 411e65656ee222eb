"""Launching and supervising the QEMU process: spawn, death signal, registry, kill.

No QEMU outlives its owner:

* foreground VMs: the child gets ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so even
  a SIGKILLed harness takes QEMU with it (caveat: the signal fires when the
  *thread* that started QEMU exits: start VMs from a thread that lives as long
  as they do, normally the main thread). A ``--qemu`` wrapper that does not
  ``exec`` QEMU would receive that signal instead of QEMU, so the VM checks
  who answers on the QMP socket (:func:`socket_peer_pid`) and refuses such a
  wrapper;
* every live foreground VM is registered (:func:`register`); ``atexit`` kills
  what is left, and SIGTERM/SIGHUP (if nobody else handles them) raise
  ``SystemExit`` in the main thread so ``with VM(...)`` blocks unwind and
  shut down;
* QEMU runs in its own session, so a Ctrl-C on the terminal reaches the
  harness (which shuts down in order) and not QEMU directly; killing it kills
  its process group.

Background VMs are killed by PID from their state file: :func:`pid_alive`
checks the PID is still that QEMU (its command line names the VM's QMP
socket) before any signal is sent.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from harness.qemu.options import opt_escape

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


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid``'s process group if ``pid`` leads one (QEMU's own session), else ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGKILL ``proc`` (and its process group) if it still runs, and reap it."""
    if proc.poll() is None:
        _kill_group(proc.pid)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def qemu_marker(path: str | Path) -> str:
    """How ``path`` (a VM's QMP socket) appears in its QEMU's command line: inside an option
    value, where QEMU wants a comma doubled (:func:`~harness.qemu.options.opt_escape`), so a
    state directory with a comma in its name is still recognised as its QEMU's."""
    return opt_escape(path)


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in ``/proc/PID/stat`` (``R``, ``S``, ``T`` stopped, ``Z``...),
    or None if there is no such process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, a debugger): state ``T`` or ``t``."""
    return process_state(pid) in ("T", "t")


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, has ``marker`` in its command line
    (for a QEMU, a path as :func:`qemu_marker` writes it)."""
    if process_state(pid) in (None, "Z", "X"):
        return False
    if marker is None:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def kill_verified(pid: int, marker: str, timeout: float = 5.0) -> bool:
    """SIGKILL ``pid`` only if it is still the process whose command line has ``marker``.

    Waits up to ``timeout`` s for it to go. True if it is gone (or was never ours).
    """
    if not pid_alive(pid, marker):
        return True
    _kill_group(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.05)
    return not pid_alive(pid, marker)


def wait_gone(pid: int, marker: str, timeout: float) -> bool:
    """Wait up to ``timeout`` s for a process we are not the parent of to exit."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, marker):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def socket_peer_pid(path: Path, timeout: float = 2.0) -> int | None:
    """The PID of the process listening on unix socket ``path`` (SO_PEERCRED), or None.

    Connects and disconnects at once; QEMU's chardev then waits for the next client.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(str(path))
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", cred)
        return pid or None
    except OSError:
        return None
    finally:
        s.close()


# --------------------------------------------------------------------------
# Registry of live foreground VMs
# --------------------------------------------------------------------------


class Killable(Protocol):
    def kill_now(self) -> None: ...


_LIVE: weakref.WeakSet[Killable] = weakref.WeakSet()
_HOOKS_INSTALLED = False
_HOOK_LOCK = threading.Lock()


def register(vm: Killable) -> None:
    """Kill ``vm`` at interpreter exit unless :func:`unregister` is called first."""
    _install_hooks()
    _LIVE.add(vm)


def unregister(vm: Killable) -> None:
    _LIVE.discard(vm)


def _kill_live_vms() -> None:
    for vm in list(_LIVE):
        vm.kill_now()


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
