"""What one VM is made of: its :class:`BootSpec`, timeouts, work files and QEMU argv (pure).

Nothing here starts a process; :func:`build_qemu_argv` is a pure function of
the spec, the work directory, the SSH port and the kernel command line, written by
:mod:`harness.qemu.bootargs` (the one place QEMU's command line is assembled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.guest.protocol import GUEST_GW, GUEST_IP, guest_cmdline
from harness.qemu.bootargs import vm_argv
from harness.qemu.options import check_machine_argv

__all__ = ["BootSpec", "Timeouts", "WorkFiles", "build_qemu_argv", "check_machine_argv", "kernel_cmdline",
           "socket_path_problem"]

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the NUL


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
    qemu_args: list[str] = field(default_factory=list)  # the user's own extra QEMU arguments (--qemu-arg)
    #: Restore this snapshot's device state (:mod:`harness.vm.snapshot`) instead of booting; the
    #: machine argv then maps the snapshot's RAM files, and ``key`` is the key its guest knows.
    incoming: Path | None = None
    key: Path | None = None  # log in with this private key (its .pub beside it) instead of a new one


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


def build_qemu_argv(spec: BootSpec, files: WorkFiles, ssh_port: int, cmdline: str, *, paused: bool = True) -> list[str]:
    """QEMU's full command line for ``spec`` (pure): the spec's machine, then the boot part
    :func:`harness.qemu.bootargs.vm_argv` adds with this VM's work files and SSH port, then
    the user's ``spec.qemu_args``. ``paused=False``: no ``-S`` (nobody will send ``cont``)."""
    return vm_argv(spec.qemu_binary, spec.machine_argv, kernel=spec.kernel, initrd=spec.initrd, append=cmdline,
                   console_sock=files.console_sock, console_log=files.console_log, qmp_sock=files.qmp_sock,
                   ssh_port=ssh_port, name=spec.name, extra=spec.qemu_args, paused=paused,
                   incoming=spec.incoming is not None)


def socket_path_problem(files: WorkFiles) -> str | None:
    """Why the work directory is unusable for unix sockets (path too long), or None."""
    longest = max((files.console_sock, files.qmp_sock), key=lambda p: len(str(p)))
    if len(os.fsencode(str(longest))) > MAX_SOCKET_PATH:
        return f"{longest} is longer than the {MAX_SOCKET_PATH} bytes a unix socket path may have"
    return None
