"""What one VM is made of: its :class:`BootSpec`, timeouts, work files and QEMU argv (pure).

Nothing here starts a process; :func:`build_qemu_argv` is a pure function of
the spec, the work directory, the SSH port and the kernel command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.guest.protocol import GUEST_GW, GUEST_IP, guest_cmdline

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the NUL

#: Options the VM adds itself; a machine_argv carrying one is a bug upstream.
RESERVED_OPTIONS = frozenset({"-kernel", "-initrd", "-append", "-serial", "-qmp", "-monitor", "-mon",
                              "-netdev", "-nic", "-net", "-display", "-nographic", "-S", "-daemonize",
                              "-no-reboot", "-nodefaults", "-pidfile"})


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
