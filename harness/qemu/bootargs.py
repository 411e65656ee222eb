"""The boot part of QEMU's command line: what a direct kernel boot adds to a machine argv.

A machine argv (:func:`harness.qemu.argv.machine_argv`) describes the hardware; the
functions here add the kernel, initramfs and command line, the serial console, and for a
harness VM the QMP monitor and the SSH port forward. Pure: paths and ports in, argv out; the
kernel command line is composed by the caller (:mod:`harness.vm`), which knows the guest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .ids import CONSOLE_ID, NET_ID, QMP_ID
from .options import check_machine_argv, kv, opt_escape

#: The machine the KVM probe boots: the smallest q35 that reaches the guest's init.
KVM_PROBE_MACHINE = ("-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "512M", "-smp", "1")


def _direct_kernel(kernel: Path, initrd: Path, append: str) -> list[str]:
    return ["-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append]


def vm_argv(qemu_binary: str, machine: list[str], *, kernel: Path, initrd: Path, append: str,
            console_sock: Path, console_log: Path, qmp_sock: Path, ssh_port: int,
            name: str | None = None, extra: Sequence[str] = (), paused: bool = True,
            incoming: bool = False) -> list[str]:
    """A harness VM's full command line: ``machine``, then the kernel, the serial console on a
    socket (logged to ``console_log``), QMP on ``qmp_sock``, guest port 22 forwarded to
    127.0.0.1:``ssh_port``, the user's ``extra`` arguments; paused (``-S``) until QMP ``cont``
    unless ``paused`` is false (a command line a person runs by hand). ``incoming``: it waits
    for a snapshot's state (``-incoming defer``, then QMP ``migrate-incoming``)."""
    check_machine_argv(machine)
    argv = [qemu_binary, *machine]
    if name:
        argv += ["-name", opt_escape(name)]
    argv += _direct_kernel(kernel, initrd, append)
    argv += [
        "-chardev", kv("socket", id=CONSOLE_ID, path=console_sock, server=True, wait=False,
                       logfile=console_log, logappend=False),
        "-serial", f"chardev:{CONSOLE_ID}",
        "-chardev", kv("socket", id=QMP_ID, path=qmp_sock, server=True, wait=False),
        "-mon", f"chardev={QMP_ID},mode=control",
        "-netdev", kv("user", id=NET_ID, restrict=True, hostfwd=f"tcp:127.0.0.1:{ssh_port}-:22"),
        "-device", kv("virtio-net-pci", netdev=NET_ID, bus="pcie.0"),  # explicit: else QEMU may pick a CXL bus
    ]
    argv += list(extra)
    if paused:
        argv.append("-S")
    if incoming:
        argv += ["-incoming", "defer"]
    return argv


def bare_argv(qemu_binary: str, machine: list[str] | tuple[str, ...], *, kernel: Path, initrd: Path,
              append: str, console_log: Path) -> list[str]:
    """A boot that runs to the guest's poweroff with its console written to ``console_log``:
    no QMP, no network (the KVM probe, the boot benchmark's floor)."""
    check_machine_argv(list(machine))
    return [qemu_binary, *machine, *_direct_kernel(kernel, initrd, append),
            "-chardev", kv("file", id=CONSOLE_ID, path=console_log), "-serial", f"chardev:{CONSOLE_ID}"]
