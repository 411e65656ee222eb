"""Persisting background VMs (``harness up``): names, state files, and stopping by record.

A background VM's state directory is ``state_dir()/NAME``; ``NAME`` is checked
by :func:`check_vm_name` where names enter (the CLI's argument parser and
:func:`vm_dir`), so a name is never a path. The directory is created 0700
whatever the umask: it holds the VM's key and its QMP and console sockets.

``vm.json`` is written as soon as QEMU is spawned (``phase: booting``, with the
PID of the process that started it) and rewritten once it booted
(``phase: running``), so a VM that exists is always visible to ``status`` and
stoppable by ``down``, whatever happened to the process that started it.
:func:`stop_recorded` stops one without needing the guest: QMP ``quit``, then
SIGKILL of the recorded PID, checked to still be that QEMU.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError, VMStateError
from harness.paths import state_dir
from harness.vm.process import kill_verified, pid_alive, qemu_marker, wait_gone

STATE_FILE = "vm.json"
STATE_VERSION = 1
BOOTING = "booting"
RUNNING = "running"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_vm_name(name: str) -> str:
    """``name`` if it is a valid VM name (letters, digits, ``_.-``, at most 64, no leading dot); else UsageError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"invalid VM name {name!r}",
                         hint="use letters, digits, '_', '.', '-' (at most 64, not starting with '.' or '-')")
    return name


def vm_dir(name: str) -> Path:
    """The state directory of background VM ``name`` (not created)."""
    return state_dir() / check_vm_name(name)


def reserve_vm_dir(name: str, root: Path | None = None) -> tuple[str, Path]:
    """A new state directory for a VM called ``name``, or ``name-2``, ``name-3``... if taken.

    The directory is made with an exclusive ``mkdir`` (then 0700), so two processes asking at
    once never get the same one and no directory that exists (a live VM's, a failed boot's
    console log) is ever reused. Returns the name and the directory.
    """
    base = make_private_dir(root or state_dir())
    for n in range(1, 1000):
        candidate = check_vm_name(name if n == 1 else f"{name[:60]}-{n}")
        d = base / candidate
        try:
            d.mkdir()
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
        return candidate, d
    raise VMStateError(f"no free VM name like {name!r} in {base}", hint="harness status; harness down NAME")


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


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
    phase: str = RUNNING  # booting (QEMU spawned, boot being followed) | running (booted)
    owner_pid: int | None = None  # the harness process that started it
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
        return pid_alive(self.pid, qemu_marker(self.qmp_sock))

    @property
    def condition(self) -> str:
        """``running``, ``booting``, ``boot abandoned`` (its starter died mid-boot) or ``dead``."""
        if not self.alive:
            return "dead"
        if self.phase == RUNNING:
            return RUNNING
        if self.owner_pid and pid_alive(self.owner_pid):
            return BOOTING
        return "boot abandoned"


def read_state(state_dir: Path) -> VMState:
    """The state in ``state_dir/vm.json``; VMStateError if absent or unreadable."""
    path = state_dir / STATE_FILE
    try:
        return VMState.from_json(path.read_text())
    except FileNotFoundError as e:
        raise VMStateError(f"no VM state in {state_dir}", hint="start one with `harness up`") from e
    except (OSError, ValueError, TypeError) as e:
        raise VMStateError(f"unreadable VM state {path}: {e}") from e


def write_state(directory: Path, state: VMState) -> Path:
    """Write ``state`` as ``directory/vm.json`` atomically (directory made 0700)."""
    make_private_dir(directory)
    path = directory / STATE_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)
    return path


META_FILE = "meta.json"


def write_meta(directory: Path, *, topology: str, kernel: str, accel: str) -> None:
    """What ``harness status`` shows of a background VM beside its state: its topology, kernel, accelerator."""
    (directory / META_FILE).write_text(json.dumps({"topology": topology, "kernel": kernel, "accel": accel}) + "\n")


def stop_recorded(state: VMState, *, quit_timeout: float = 5.0) -> str:
    """Stop the QEMU ``state`` records without the guest: QMP quit, then SIGKILL. Says how.

    The SIGKILL only goes to the recorded PID if it is still that QEMU (its
    command line names this VM's QMP socket).
    """
    if not state.alive:
        return "already gone"
    from harness.vm.qmp import QMPFailure, SyncQMP

    qmp = SyncQMP(Path(state.qmp_sock))
    try:
        qmp.connect(timeout=2)
        qmp.execute("quit", timeout=2)
    except QMPFailure:
        pass
    finally:
        qmp.close()
    marker = qemu_marker(state.qmp_sock)
    if wait_gone(state.pid, marker, quit_timeout):
        return "QMP quit"
    if kill_verified(state.pid, marker):
        return "SIGKILL"
    raise VMStateError(f"QEMU pid {state.pid} did not exit after SIGKILL")


def state_age(state: VMState) -> float:
    """Seconds since that VM was started."""
    return time.time() - state.started_at
