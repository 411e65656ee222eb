"""``harness up | ssh | status | down``: background VMs, which outlive the command that starts them.

Their state lives in ``state_dir()/NAME`` (:mod:`harness.vm.state`); a VM is visible to
``status`` and stoppable by ``down`` from the moment its QEMU is spawned, whatever happened
to the ``up`` that started it, and ``down`` never needs the guest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from rich.markup import escape
from rich.table import Table

from harness.cli.boot import (
    boot_machine,
    boot_options,
    guest_command,
    out,
    report_command_end,
    seconds,
    stream_output,
    vm_name,
)
from harness.errors import VMStateError
from harness.paths import state_dir
from harness.vm.attached import AttachedVM
from harness.vm.state import META_FILE, STATE_FILE, make_private_dir, read_state, stop_recorded, vm_dir, write_meta


def stdin_for_guest() -> BinaryIO | None:
    """The harness's stdin, passed to a guest command unless it is a terminal."""
    try:
        return None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    except (ValueError, AttributeError):
        return None


def cmd_up(args: argparse.Namespace) -> int:
    d = vm_dir(args.name)
    if (d / STATE_FILE).exists():
        try:
            st = read_state(d)
        except VMStateError:
            st = None  # unreadable state: nothing of ours runs there
        if st is not None and st.alive:
            raise VMStateError(f"a VM named '{args.name}' already exists ({st.condition})",
                               hint=f"harness ssh {args.name}, or harness down {args.name}")
    if d.exists():  # a dead VM's leftovers, inside the state root (the name is checked)
        shutil.rmtree(d, ignore_errors=True)
    make_private_dir(d)
    ok = False
    try:
        m = boot_machine(args, name=args.name, workdir=d, detach=True)
        vm, p = m.vm, m.prepared
        write_meta(d, topology=p.loaded.name, kernel=p.kernel.origin, accel=p.accel.accel)
        m.close()
        ok = True
    finally:
        if not ok:
            shutil.rmtree(d, ignore_errors=True)
    out.print(f"VM [bold]{escape(args.name)}[/bold] is up: ssh port {vm.ssh_port}, console log {escape(str(vm.console_log))}")
    out.print(escape(f"  harness ssh {args.name}      harness down {args.name}"))
    return 0


def _known_vms() -> list[str]:
    return sorted(p.name for p in state_dir().iterdir() if (p / STATE_FILE).exists())


def _no_such_vm(name: str) -> VMStateError:
    known = _known_vms()
    return VMStateError(f"no VM named '{name}'", hint=f"known: {', '.join(known)}" if known
                        else "start one with harness up TOPOLOGY --name NAME")


def attach_vm(name: str) -> AttachedVM:
    """The background VM ``name`` (a checked name), attached; VMStateError if there is none."""
    d = vm_dir(name)
    if not (d / STATE_FILE).exists():
        raise _no_such_vm(name)
    return AttachedVM.attach(d)


def cmd_ssh(args: argparse.Namespace) -> int:
    vm = attach_vm(args.name)
    try:
        if args.cmd:
            result = vm.run(guest_command(list(args.cmd)), timeout=args.timeout, check=False, on_output=stream_output,
                            stdin=stdin_for_guest())
            return report_command_end(result)
        return vm.shell()
    finally:
        vm.close()


def cmd_status(args: argparse.Namespace) -> int:
    table = Table(title="numa-harness VMs", title_justify="left")
    for col in ("name", "topology", "pid", "ssh port", "up for", "state", "console log"):
        table.add_column(col)
    colour = {"running": "green", "booting": "yellow", "boot abandoned": "red", "dead": "red"}
    for d in sorted(p for p in state_dir().iterdir() if p.is_dir()):
        try:
            st = read_state(d)
        except VMStateError:
            continue
        meta = {}
        try:
            meta = json.loads((d / META_FILE).read_text())
        except (OSError, ValueError):
            pass
        cond = st.condition
        table.add_row(escape(d.name), escape(str(meta.get("topology", "?"))), str(st.pid), str(st.ssh_port),
                      f"{time.time() - st.started_at:.0f} s" if cond != "dead" else "—",
                      f"[{colour.get(cond, 'red')}]{escape(cond)}[/]", escape(str(st.console_log)))
    out.print(table)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop a background VM without needing its guest: QMP quit, then SIGKILL of its verified PID."""
    d = vm_dir(args.name)
    if not (d / STATE_FILE).exists():
        raise _no_such_vm(args.name)
    try:
        st = read_state(d)
    except VMStateError:
        shutil.rmtree(d, ignore_errors=True)
        out.print(f"VM {args.name} had unreadable state; removed", markup=False)
        return 0
    how = stop_recorded(st)
    shutil.rmtree(d, ignore_errors=True)
    if how == "already gone":
        out.print(f"VM {args.name} was already gone; state removed", markup=False)
    else:
        out.print(f"VM {args.name} is down ({how})", markup=False)
    return 0


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    """``up``, ``ssh``, ``status`` and ``down``."""
    u = sub.add_parser("up", help="boot a VM in the background")
    boot_options(u)
    u.add_argument("--name", type=vm_name, default="default", help="name to refer to it by (default: default)")
    command("up")(cmd_up)

    s = sub.add_parser("ssh", help="a shell (or one command) in a background VM",
                       usage="harness ssh [NAME] [-- CMD [ARGS...]]")
    s.add_argument("name", nargs="?", type=vm_name, default="default")
    s.add_argument("--timeout", type=seconds, default=600)
    s.set_defaults(cmd=[])
    command("ssh")(cmd_ssh)

    sub.add_parser("status", help="list background VMs")
    command("status")(cmd_status)

    d = sub.add_parser("down", help="shut a background VM down")
    d.add_argument("name", nargs="?", type=vm_name, default="default")
    command("down")(cmd_down)
