"""``harness up | ssh | status | down | ssh-config | qmp``: background VMs, which outlive the
command that starts them.

Their state lives in ``state_dir()/NAME`` (:mod:`harness.vm.state`); a VM is visible to
``status`` and stoppable by ``down`` from the moment its QEMU is spawned, whatever happened
to the ``up`` that started it, and ``down`` never needs the guest. Imports stay light at the
top (``harness ssh NAME -- CMD`` should start fast): the boot machinery, rich and the SSH and
QMP libraries are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from harness.cli.common import boot_options, guest_command, report_command_end, seconds, stream_output, vm_name
from harness.errors import HarnessError, UsageError, VMStateError
from harness.paths import state_dir
from harness.vm.state import (
    META_FILE,
    STATE_FILE,
    VMState,
    make_private_dir,
    read_state,
    stop_recorded,
    vm_dir,
    write_meta,
)

if TYPE_CHECKING:
    from harness.vm.attached import AttachedVM


def stdin_for_guest() -> BinaryIO | None:
    """The harness's stdin, passed to a guest command unless it is a terminal."""
    try:
        return None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    except (ValueError, AttributeError):
        return None


def cmd_up(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from harness.cli.boot import boot_machine, out

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
    from harness.vm.attached import AttachedVM

    d = vm_dir(name)
    if not (d / STATE_FILE).exists():
        raise _no_such_vm(name)
    return AttachedVM.attach(d)


def _running_state(name: str) -> VMState:
    """The state of background VM ``name``, which must be running (its QEMU alive)."""
    d = vm_dir(name)
    if not (d / STATE_FILE).exists():
        raise _no_such_vm(name)
    st = read_state(d)
    if not st.alive:
        raise VMStateError(f"VM '{name}' is not running (its QEMU is gone)", hint=f"harness down {name}, then harness up")
    return st


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


def _vm_rows() -> list[dict[str, Any]]:
    """One dict per background VM, with the keys ``status --json`` documents."""
    rows = []
    root = state_dir()
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
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
        rows.append({"name": d.name, "topology": meta.get("topology"), "kernel": meta.get("kernel"),
                     "accel": meta.get("accel"), "state": cond, "pid": st.pid, "ssh_port": st.ssh_port,
                     "up_seconds": round(time.time() - st.started_at, 1) if cond != "dead" else None,
                     "console_log": st.console_log, "qmp_socket": st.qmp_sock, "ssh_key": st.key, "workdir": st.workdir})
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    rows = _vm_rows()
    if args.json:
        from harness.cli.main import print_json

        print_json({"vms": rows})
        return 0
    from rich.markup import escape
    from rich.table import Table

    from harness.cli.main import console

    table = Table(title="numa-harness VMs", title_justify="left")
    for col in ("name", "topology", "pid", "ssh port", "up for", "state", "console log"):
        table.add_column(col)
    colour = {"running": "green", "booting": "yellow", "boot abandoned": "red", "dead": "red"}
    for r in rows:
        cond = r["state"]
        table.add_row(escape(r["name"]), escape(str(r["topology"] or "?")), str(r["pid"]), str(r["ssh_port"]),
                      f"{r['up_seconds']:.0f} s" if r["up_seconds"] is not None else "—",
                      f"[{colour.get(cond, 'red')}]{escape(cond)}[/]", escape(str(r["console_log"])))
    console().print(table)
    return 0


# --- ssh-config and qmp: the VM for other tools --------------------------------------

def ssh_config(name: str, st: VMState, known_hosts: Path | None) -> str:
    """An OpenSSH config stanza for VM ``name``: ``ssh -F FILE NAME``, scp and rsync use it.
    With ``known_hosts`` (a file holding the guest's host key under the alias) the host key
    is checked; without, it is not (and never recorded)."""
    def q(path: str | Path) -> str:
        text = str(path)
        return f'"{text}"' if any(c.isspace() for c in text) else text

    lines = [f"Host {name}", "    HostName 127.0.0.1", f"    Port {st.ssh_port}", "    User root",
             f"    IdentityFile {q(st.key)}", "    IdentitiesOnly yes", "    PasswordAuthentication no",
             "    BatchMode yes"]
    if known_hosts is not None:
        lines += [f"    HostKeyAlias numa-harness-{name}", f"    UserKnownHostsFile {q(known_hosts)}",
                  "    StrictHostKeyChecking yes"]
    else:
        lines += ["    UserKnownHostsFile /dev/null", "    StrictHostKeyChecking no", "    LogLevel ERROR"]
    return "\n".join(lines) + "\n"


def cmd_ssh_config(args: argparse.Namespace) -> int:
    from harness.image.host import host_public_key

    st = _running_state(args.name)
    known: Path | None = None
    pub = host_public_key()
    if pub is not None:  # the guest's host key, the same for every image built on this host
        known = vm_dir(args.name) / "known_hosts"
        known.write_text(f"numa-harness-{args.name} {pub}\n")
    sys.stdout.write(ssh_config(args.name, st, known))
    return 0


def qmp_arguments(text: str | None) -> dict[str, Any] | None:
    """The ARGS-JSON of ``harness qmp``: a JSON object, or None when not given."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f"QMP arguments are not JSON: {e}", hint='write them as one JSON object: \'{"id": "cxl-mem0"}\'') from None
    if not isinstance(value, dict):
        raise UsageError(f"QMP arguments must be a JSON object, not {type(value).__name__}",
                         hint='e.g. \'{"path": "/machine/peripheral/cxl-mem0"}\'')
    return value


def cmd_qmp(args: argparse.Namespace) -> int:
    from harness.errors import QMPCommandError
    from harness.vm.qmp import qmp_once

    st = _running_state(args.name)
    arguments = qmp_arguments(args.arguments)
    try:
        if args.qmp_command is None:  # what can be asked
            result: Any = sorted(c["name"] for c in qmp_once(Path(st.qmp_sock), "query-commands", timeout=args.timeout))
        else:
            result = qmp_once(Path(st.qmp_sock), args.qmp_command, arguments, timeout=args.timeout)
    except QMPCommandError as e:
        raise HarnessError(f"VM '{args.name}': {e}".replace("\n", " "),
                           hint="harness qmp NAME (no command) lists the commands QEMU has") from None
    print(json.dumps(result, indent=1))
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
        print(f"VM {args.name} had unreadable state; removed")
        return 0
    how = stop_recorded(st)
    shutil.rmtree(d, ignore_errors=True)
    if how == "already gone":
        print(f"VM {args.name} was already gone; state removed")
    else:
        print(f"VM {args.name} is down ({how})")
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

    st = sub.add_parser("status", help="list background VMs")
    st.add_argument("--json", action="store_true", help="print them as JSON")
    command("status")(cmd_status)

    c = sub.add_parser("ssh-config", help="an OpenSSH config stanza for a background VM: "
                                          "ssh -F <(harness ssh-config NAME) NAME, scp, rsync -e")
    c.add_argument("name", nargs="?", type=vm_name, default="default")
    command("ssh-config")(cmd_ssh_config)

    m = sub.add_parser("qmp", help="run a QMP command on a background VM, print its JSON result",
                       usage="harness qmp [NAME] [CMD [ARGS-JSON]]")
    m.add_argument("name", type=vm_name, help="the VM's name (harness up --name)")
    m.add_argument("qmp_command", nargs="?", metavar="CMD", help="a QMP command (none: list them)")
    m.add_argument("arguments", nargs="?", metavar="ARGS-JSON", help="its arguments as one JSON object")
    m.add_argument("--timeout", type=seconds, default=10.0, help="seconds to wait for QEMU's answer (default 10)")
    command("qmp")(cmd_qmp)

    d = sub.add_parser("down", help="shut a background VM down")
    d.add_argument("name", nargs="?", type=vm_name, default="default")
    command("down")(cmd_down)
