"""What every command module shares and can import at no cost: argument types, the boot
options, a guest command's words and end. Imports nothing heavy (no rich, paramiko, QEMU,
no harness.boot), so ``harness --version`` and ``harness ssh NAME -- CMD`` start fast;
every command module imports them from here.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from harness.errors import HarnessError, UsageError
from harness.vm.state import check_vm_name

if TYPE_CHECKING:
    from harness.vm.ssh import CommandResult


# --- argument types (checked while parsing, before anything boots) --------------

def vm_name(text: str) -> str:
    try:
        return check_vm_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 1-65535")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"timeout must be a positive number of seconds, not {text}")
    return value


# --- options of every command that boots ----------------------------------------

def boot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", metavar="TOPOLOGY", help="preset name or path to a .yaml file")
    machine_options(p)


def machine_options(p: argparse.ArgumentParser, *, one_vm: bool = True) -> None:
    """The kernel, accelerator and machine options of every command that boots a guest.

    ``one_vm=False`` (a command that boots several VMs, each set up its own way) leaves
    out ``--ssh-port``, ``--no-setup`` and ``--qemu-arg``."""
    p.add_argument("--kernel", help="bzImage to boot, a build tree, or debian:X.Y (Debian's X.Y kernel, fetched and cached); default: the distribution kernel, fetched and cached [$NUMA_HARNESS_KERNEL]")
    p.add_argument("--modules", help="modules_install root for --kernel [$NUMA_HARNESS_MODULES]")
    p.add_argument("--kernel-config", help="the .config of --kernel, to check the options the topology needs")
    p.add_argument("--kernel-tree", help="a kernel build tree (KSRC or O=): bzImage, .config, modules")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], help="accelerator (default: the topology's, normally auto) [$NUMA_HARNESS_ACCEL]")
    p.add_argument("--qemu", help="QEMU binary [$NUMA_HARNESS_QEMU]")
    p.add_argument("--tcg-thread", choices=["auto", "single", "multi"],
                   help="TCG threading (default: the topology's machine.tcg_thread, normally auto: single when vCPUs "
                        "outnumber host cores) [$NUMA_HARNESS_TCG_THREAD]")
    if one_vm:
        p.add_argument("--ssh-port", type=port, help="host port for the guest's SSH (default: a free one)")
        p.add_argument("--no-setup", action="store_true", help="skip the topology's guest set-up (CXL regions, demotion)")
        qemu_arg_option(p)


def qemu_arg_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qemu-arg", action="append", default=[], metavar="ARG",
                   help="an extra QEMU argument, appended to the command line (repeat it: --qemu-arg -s, "
                        "--qemu-arg -trace --qemu-arg 'cxl_*')")


# --- a guest command ----------------------------------------------------------------

def guest_command(words: list[str]) -> str:
    """The words after ``--`` -> one shell command line (a single word is used as written)."""
    if not words:
        raise HarnessError("no guest command given", hint="harness run TOPOLOGY -- CMD ...")
    return words[0] if len(words) == 1 else shlex.join(words)


def stream_output(stream: str, data: bytes) -> None:
    f = sys.stdout if stream == "stdout" else sys.stderr
    f.buffer.write(data)
    f.flush()


def report_command_end(result: CommandResult) -> int:
    """Say why a guest command was killed (if it was); its exit status for the CLI."""
    if result.signal is not None:
        from rich.console import Console

        err = Console(stderr=True, highlight=False, soft_wrap=True)
        oom = result.oom_kills[-1] if result.oom_kills else None
        if result.signal == "KILL" and oom is not None:
            err.print(f"[red]error:[/red] guest command killed by the OOM killer (SIGKILL, exit {result.exit_status}): "
                      f"{oom.message_line}", markup=True, soft_wrap=True)
            err.print(oom.describe(), markup=False)
        else:
            err.print(f"[red]error:[/red] guest command killed by SIG{result.signal} (exit {result.exit_status})",
                      markup=True)
    return result.exit_status
