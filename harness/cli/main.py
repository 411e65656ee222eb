"""The ``harness`` command. Parses arguments, calls the library, shows results.

Errors the user can act on (HarnessError) are printed once, in one line (plus
any detail such as a console tail), without a traceback. Exit statuses: a
guest command's own status when it ran (``run``, ``ssh``; 128+N when a signal
killed it, 137 for SIGKILL), 123 when the kernel under test is bad (a panic,
an oops or BUG, a boot that never ran init: ``git bisect run`` marks it bad),
125 for a failure of the harness itself (bad arguments included; bisect skips
it), 130 for Ctrl-C.

Start-up is kept short: this module imports nothing heavy (rich, paramiko, QEMU's QMP
library, the topology model); a command's module (:data:`COMMAND_MODULES`) is imported only
when that command runs, or for ``--help``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.errors import HARNESS_FAILURE, HarnessError

if TYPE_CHECKING:
    from rich.console import Console

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}

#: The module of harness.cli that registers each command beyond the topology ones here.
COMMAND_MODULES = {
    "boot": "boot", "run": "boot",
    "up": "vms", "ssh": "vms", "status": "vms", "down": "vms", "ssh-config": "vms", "qmp": "vms",
    "stats": "stats", "kernel": "kernel", "selftest": "selftest",
    "compare-isolation": "isolation", "contract-report": "isolation", "doctor": "doctor",
    "matrix": "ci", "nightly": "ci",
}
_consoles: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """The rich console for stdout (or stderr), made on first use."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=True, highlight=False, soft_wrap=True) if stderr else Console(highlight=False)
    return _consoles[stderr]


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout, keys as the README documents them."""
    print(json.dumps(data, indent=1, sort_keys=False))


def command(name: str) -> Callable[[Command], Command]:
    def deco(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return deco


def print_error(e: HarnessError) -> None:
    """One error line; the message (which quotes user input) is printed literally, never as markup."""
    err = console(stderr=True)
    err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
    if e.detail:
        err.print(e.detail, markup=False, highlight=False, soft_wrap=True)


# --- topology commands ----------------------------------------------------------

@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    from harness.topology import load, preset_names

    rows = []
    for name in preset_names():
        loaded = load(name)
        t = loaded.topology
        rows.append({"name": name, "path": str(loaded.path), "nodes": len(t.nodes),
                     "cxl_devices": len(t.cxl.devices) if t.cxl else 0, "description": t.description})
    if args.json:
        print_json({"presets": rows})
        return 0
    from rich.table import Table

    table = Table(title="numa-harness topology presets", title_justify="left")
    table.add_column("preset", style="bold cyan")
    table.add_column("SRAT nodes", justify="right")
    table.add_column("CXL devices", justify="right")
    table.add_column("description")
    for r in rows:
        table.add_row(escape(str(r["name"])), str(r["nodes"]), str(r["cxl_devices"]), escape(str(r["description"])))
    console().print(table)
    return 0


@command("schema")
def cmd_schema(args: argparse.Namespace) -> int:
    from harness.topology.reference import topology_json_schema

    print_json(topology_json_schema())
    return 0


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    from harness.errors import TopologyError
    from harness.topology import load

    err, out = console(stderr=True), console()
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
    if args.full:
        full = _full_command_line(args)
    else:
        full = _machine_command_line(args)
    if args.json:
        print(json.dumps(full))
    else:
        print(format_argv(full))
    return 0


def _machine_command_line(args: argparse.Namespace) -> list[str]:
    """The machine half: what the topology describes, checked against the installed QEMU."""
    from harness.boot.prepare import backing_dir, tcg_thread_for
    from harness.qemu.argv import machine_argv
    from harness.qemu.limits import check_limits, host_memory
    from harness.qemu.preflight import find_binary, preflight
    from harness.topology import load

    topo = load(args.topology).topology
    accel = args.accel if args.accel != "auto" else "tcg"
    threading = tcg_thread_for(topo, args.tcg_thread) if accel == "tcg" else None
    argv = machine_argv(topo, accel=accel, tcg_thread=threading.mode if threading else None, files_dir=str(backing_dir()))
    binary = find_binary(args.qemu) if not args.no_check else (args.qemu or "qemu-system-x86_64")
    if not args.no_check:
        caps = preflight(argv, binary)
        check_limits(topo, qemu_version=caps.version, host_memory=host_memory(), accel=accel)
    return [binary, *argv, *args.qemu_arg]


def _full_command_line(args: argparse.Namespace) -> list[str]:
    """Everything a boot would run: prepared as ``harness boot`` prepares (kernel, image,
    accelerator, preflight), with a work directory holding the SSH key the command line
    passes to the guest, its console log and sockets. Not paused: nobody sends ``cont``."""
    import tempfile
    from pathlib import Path

    from harness.boot import KernelSpec
    from harness.boot.prepare import check_qemu_args, prepare
    from harness.vm.keys import generate_keypair
    from harness.vm.ports import pick_free_port
    from harness.vm.spec import WorkFiles, build_qemu_argv, kernel_cmdline

    kspec = KernelSpec.from_env(args.kernel, args.modules, args.kernel_tree, args.kernel_config)
    extra = [a for a in args.qemu_arg if a != "-S"]
    check_qemu_args(extra)
    p = prepare(args.topology, kernel=kspec, accel=args.accel, qemu=args.qemu, tcg_thread=args.tcg_thread,
                qemu_args=extra)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="numa-harness-cmd-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = WorkFiles(workdir)
    key = generate_keypair(workdir)
    port = args.ssh_port or pick_free_port()
    cmdline = kernel_cmdline(p.spec.append, p.spec.modules, key.public_body)
    argv = build_qemu_argv(p.spec, files, port, cmdline, paused=False)
    if "-S" in args.qemu_arg:  # a person starting it by hand for gdb: QEMU waits for gdb's continue
        argv.append("-S")
    err = console(stderr=True)
    err.print(escape(f"# work directory {workdir}: console log {files.console_log}, QMP {files.qmp_sock}"), soft_wrap=True)
    err.print(escape(f"# log in: ssh -i {files.key} -p {port} -o StrictHostKeyChecking=no "
                     "-o UserKnownHostsFile=/dev/null root@127.0.0.1"), soft_wrap=True)
    return argv


# --- argument parsing -----------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 125 like every other harness failure (2 could be a guest's)."""

    def error(self, message: str):  # noqa: ANN201 - NoReturn in typeshed
        self.print_usage(sys.stderr)
        self.exit(HARNESS_FAILURE, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``only``: a command name, to import just the module that registers it."""
    p = Parser(prog="harness", description="Boot emulated NUMA/CXL topologies in QEMU and test kernels on them.")
    p.add_argument("--version", action="version", version=f"numa-harness {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser("list", help="list the topology presets")
    ls.add_argument("--json", action="store_true", help="print them as JSON")

    v = sub.add_parser("validate", help="validate topology files or presets (every mistake, FILE:LINE:COL)")
    v.add_argument("topologies", nargs="+", metavar="TOPOLOGY")

    sub.add_parser("schema", help="print the JSON Schema of the topology format (for editors)")

    from harness.cli.common import machine_options, port, qemu_arg_option

    q = sub.add_parser("qemu-cmd", help="print the QEMU command line for a topology")
    q.add_argument("topology", metavar="TOPOLOGY", help="preset name or path to a .yaml file")
    q.add_argument("--json", action="store_true", help="print the argv as a JSON list")
    q.add_argument("--full", action="store_true",
                   help="the whole command line a boot would use: kernel, initramfs, kernel parameters (with an SSH "
                        "key made for it), console, QMP, network; prepares the kernel and image as boot does")
    q.add_argument("--workdir", help="with --full: where the SSH key, console log and sockets go (default: a new "
                                     "temporary directory)")
    q.add_argument("--no-check", action="store_true", help="skip checking the argv against the installed QEMU")
    machine_options(q, one_vm=False)
    q.set_defaults(accel="tcg")
    for action in q._actions:
        if action.dest == "accel":
            action.help = "accelerator to generate for (default tcg; auto probes KVM as boot does with --full, and is shown as tcg without)"
    q.add_argument("--ssh-port", type=port, help="with --full: host port for the guest's SSH (default: a free one)")
    qemu_arg_option(q)

    import importlib

    modules = [COMMAND_MODULES[only]] if only in COMMAND_MODULES else (
        [] if only is not None else list(dict.fromkeys(COMMAND_MODULES.values())))
    for name in modules:
        importlib.import_module(f"harness.cli.{name}").register(sub, command)
    return p


def _join_qemu_args(words: list[str]) -> list[str]:
    """``--qemu-arg -s`` -> ``--qemu-arg=-s``: QEMU options start with '-', which argparse would
    take for an option of ours."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "--qemu-arg" and i + 1 < len(words):
            out.append(f"--qemu-arg={words[i + 1]}")
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


def _command_word(words: list[str]) -> str | None:
    """The command a command line runs (its first word), when that is all it needs; None means
    build the whole parser (help, a mistyped command, no command)."""
    if words and not words[0].startswith("-") and (words[0] in COMMAND_MODULES or words[0] in (
            "list", "validate", "schema", "qemu-cmd")):
        return words[0]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    guest_cmd: list[str] = []
    if "--" in words:  # "harness run TOPO [opts] -- CMD ...": the rest is the guest's
        cut = words.index("--")
        words, guest_cmd = words[:cut], words[cut + 1:]
    if words == ["--version"]:  # the fastest answer there is
        print(f"numa-harness {__version__}")
        return 0
    words = _join_qemu_args(words)
    args = build_parser(_command_word(words)).parse_args(words)
    if hasattr(args, "cmd"):
        args.cmd = guest_cmd
    try:
        return COMMANDS[args.command](args)
    except HarnessError as e:
        print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted")
        return 130
    except OSError as e:  # a host problem no layer below turned into a HarnessError: still one line
        console(stderr=True).print(f"[red]error:[/red] {escape(_os_error_line(e))}", markup=True, soft_wrap=True)
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
