"""The ``harness`` command. Parses arguments, calls the library, shows results.

Errors the user can act on (HarnessError) are printed once, in one line (plus
any detail such as a console tail), without a traceback; exit status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.errors import HarnessError
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
        table.add_row(name, str(len(t.nodes)), str(len(t.cxl.devices) if t.cxl else 0), t.description)
    out.print(table)
    return 0


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for ref in args.topologies:
        try:
            loaded = load(ref)
        except HarnessError as e:
            err.print(f"[red]error:[/red] {e}", markup=True, soft_wrap=True)
            status = 2
            continue
        out.print(f"[green]ok[/green] {loaded.path}", soft_wrap=True)
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
    from harness.qemu.preflight import find_binary, preflight

    topo = load(args.topology).topology
    accel = args.accel if args.accel != "auto" else "tcg"
    argv = machine_argv(topo, accel=accel)
    binary = find_binary(args.qemu) if not args.no_check else (args.qemu or "qemu-system-x86_64")
    if not args.no_check:
        preflight(argv, binary)
    full = [binary, *argv]
    if args.json:
        print(json.dumps(full))
    else:
        print(format_argv(full))
    return 0


# --- argument parsing -----------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Boot emulated NUMA/CXL topologies in QEMU and test kernels on them.")
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
    q.add_argument("--no-check", action="store_true", help="skip checking the argv against the installed QEMU")
    _add_boot_commands(sub)
    from harness.cli import kernel as cli_kernel
    from harness.cli import selftest as cli_selftest
    cli_kernel.register(sub, command)
    cli_selftest.register(sub, command)
    return p


def _add_boot_commands(sub: argparse._SubParsersAction) -> None:
    """Boot commands live in harness.cli.boot; imported lazily so topology commands stay fast."""
    try:
        from harness.cli import boot as cli_boot
    except ImportError:
        return
    cli_boot.register(sub, command)


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
        err.print(f"[red]error:[/red] {e}", markup=True, soft_wrap=True)
        if e.detail:
            err.print(e.detail, markup=False, highlight=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
