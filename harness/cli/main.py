"""The ``harness`` command. Parses arguments, calls the library, shows results.

Errors the user can act on (HarnessError) are printed once, in one line (plus
any detail such as a console tail), without a traceback. Exit statuses: a
guest command's own status when it ran (``run``, ``ssh``; 128+N when a signal
killed it, 137 for SIGKILL), 125 for a failure of the harness itself (bad
arguments included), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import __version__
from harness.errors import HARNESS_FAILURE, HarnessError
from harness.qemu.argv import machine_argv
from harness.topology import load, preset_names

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def deco(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return deco


def print_error(e: HarnessError) -> None:
    """One error line; the message (which quotes user input) is printed literally, never as markup."""
    err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
    if e.detail:
        err.print(e.detail, markup=False, highlight=False, soft_wrap=True)


# --- topology commands ----------------------------------------------------------

@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="numa-harness topology presets", title_justify="left")
    table.add_column("preset", style="bold cyan")
    table.add_column("SRAT nodes", justify="right")
    table.add_column("CXL devices", justify="right")
    table.add_column("description")
    for name in preset_names():
        t = load(name).topology
        table.add_row(escape(name), str(len(t.nodes)), str(len(t.cxl.devices) if t.cxl else 0), escape(t.description))
    out.print(table)
    return 0


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    from harness.errors import TopologyError

    status = 0
    for ref in args.topologies:
        try:
            loaded = load(ref)
        except TopologyError as e:  # every mistake in the file, one quickfix line each
            for issue in e.issues:
                err.print(escape(issue.quickfix()), soft_wrap=True)
            status = HARNESS_FAILURE
            continue
        except HarnessError as e:
            print_error(e)
            status = HARNESS_FAILURE
            continue
        out.print(f"[green]ok[/green] {escape(str(loaded.path))}", soft_wrap=True)
    return status


def format_argv(argv: Sequence[str]) -> str:
    """One option (with its value) per line, shell-quoted, ready to paste."""
    lines: list[str] = [shlex.quote(argv[0])]
    i = 1
    while i < len(argv):
        if argv[i].startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            lines.append(f"{shlex.quote(argv[i])} {shlex.quote(argv[i + 1])}")
            i += 2
        else:
            lines.append(shlex.quote(argv[i]))
            i += 1
    return " \\\n    ".join(lines)


@command("qemu-cmd")
def cmd_qemu_cmd(args: argparse.Namespace) -> int:
    from harness.boot.prepare import backing_dir, tcg_thread_for
    from harness.qemu.limits import check_limits, host_memory
    from harness.qemu.preflight import find_binary, preflight

    topo = load(args.topology).topology
    accel = args.accel if args.accel != "auto" else "tcg"
    threading = tcg_thread_for(topo, args.tcg_thread) if accel == "tcg" else None
    argv = machine_argv(topo, accel=accel, tcg_thread=threading.mode if threading else None, files_dir=str(backing_dir()))
    binary = find_binary(args.qemu) if not args.no_check else (args.qemu or "qemu-system-x86_64")
    if not args.no_check:
        caps = preflight(argv, binary)
        check_limits(topo, qemu_version=caps.version, host_memory=host_memory(), accel=accel)
    full = [binary, *argv]
    if args.json:
        print(json.dumps(full))
    else:
        print(format_argv(full))
    return 0


# --- argument parsing -----------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 125 like every other harness failure (2 could be a guest's)."""

    def error(self, message: str):  # noqa: ANN201 - NoReturn in typeshed
        self.print_usage(sys.stderr)
        self.exit(HARNESS_FAILURE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="harness", description="Boot emulated NUMA/CXL topologies in QEMU and test kernels on them.")
    p.add_argument("--version", action="version", version=f"numa-harness {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("list", help="list the topology presets")

    v = sub.add_parser("validate", help="validate topology files or presets")
    v.add_argument("topologies", nargs="+", metavar="TOPOLOGY")

    q = sub.add_parser("qemu-cmd", help="print the QEMU command line for a topology")
    q.add_argument("topology", metavar="TOPOLOGY", help="preset name or path to a .yaml file")
    q.add_argument("--json", action="store_true", help="print the argv as a JSON list")
    q.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="tcg",
                   help="accelerator to generate for (auto is shown as tcg: probing needs a boot)")
    q.add_argument("--qemu", help="QEMU binary (default: $NUMA_HARNESS_QEMU or qemu-system-x86_64 on PATH)")
    q.add_argument("--tcg-thread", choices=["auto", "single", "multi"], help="TCG threading (default: the topology's)")
    q.add_argument("--no-check", action="store_true", help="skip checking the argv against the installed QEMU")
    _add_boot_commands(sub)
    from harness.cli import isolation as cli_isolation
    from harness.cli import kernel as cli_kernel
    from harness.cli import selftest as cli_selftest
    from harness.cli import stats as cli_stats
    cli_stats.register(sub, command)
    cli_kernel.register(sub, command)
    cli_selftest.register(sub, command)
    cli_isolation.register(sub, command)
    return p


def _add_boot_commands(sub: argparse._SubParsersAction) -> None:
    """Boot commands live in harness.cli.boot (foreground) and harness.cli.vms (background VMs);
    imported lazily so topology commands stay fast."""
    try:
        from harness.cli import boot as cli_boot
        from harness.cli import vms as cli_vms
    except ImportError:
        return
    cli_boot.register(sub, command)
    cli_vms.register(sub, command)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    guest_cmd: list[str] = []
    if "--" in words:  # "harness run TOPO [opts] -- CMD ...": the rest is the guest's
        cut = words.index("--")
        words, guest_cmd = words[:cut], words[cut + 1:]
    args = build_parser().parse_args(words)
    if hasattr(args, "cmd"):
        args.cmd = guest_cmd
    try:
        return COMMANDS[args.command](args)
    except HarnessError as e:
        print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except OSError as e:  # a host problem no layer below turned into a HarnessError: still one line
        err.print(f"[red]error:[/red] {_os_error_line(e)}", markup=True, soft_wrap=True)
        return HARNESS_FAILURE


def _os_error_line(e: OSError) -> str:
    """One line for an OSError; a full or read-only disk names the cache, where the harness writes."""
    import errno

    where = f": {e.filename}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        from harness.cachefs import CACHE_HINT

        try:
            from harness.paths import cache_dir

            cache = f" (cache: {cache_dir()}; {CACHE_HINT})"
        except HarnessError:
            cache = f" ({CACHE_HINT})"
        return f"cannot write{where}: {(e.strerror or str(e)).lower()}{cache}"
    return f"{e.strerror or e}{where}"


if __name__ == "__main__":
    sys.exit(main())
