"""``harness boot | run``: the commands that boot a guest in the foreground, and what the
background-VM commands (:mod:`harness.cli.vms`) share with them: progress display, booting
with the CLI's options, running a guest command, argument types.

Each shows rich progress for every step that can take over a second and leaves no QEMU
behind.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from harness.boot import KernelSpec, Machine, Prepared, boot
from harness.cli.common import (
    boot_options,
    guest_command,
    report_command_end,
    seconds,
    stream_output,
)
from harness.errors import BAD_KERNEL, BAD_KERNEL_KINDS
from harness.stats import Snapshot, snapshot
from harness.units import format_size

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

MILESTONE_TEXT = {
    "qemu-up": "QEMU up", "kernel-started": "kernel started", "init-running": "init running",
    "modules-loaded": "modules loaded", "network-up": "network up",
    "sshd-ready": "sshd ready", "ssh-ready": "SSH ready",
}


class Steps:
    """A spinner naming the current step; each finished step is printed with its time."""

    def __init__(self, console: Console):
        self.console = console
        self._status: Status | None = None
        self._title: str | None = None
        self._t0 = 0.0
        self._closed = False

    def step(self, title: str) -> None:
        if self._closed:
            return
        self._finish()
        self._title, self._t0 = title, time.monotonic()
        if self._status is None:
            self._status = self.console.status(escape(title))
            self._status.start()
        self._status.update(escape(title))

    def detail(self, message: str) -> None:
        if self._status is not None and self._title:
            self._status.update(escape(f"{self._title}: {message}"))

    def milestone(self, name: str) -> None:
        """A boot milestone is an event: print it with the time since the previous mark.
        Called from the VM's console thread; rich's status and print are thread-safe."""
        if self._closed:
            return
        now = time.monotonic()
        text = MILESTONE_TEXT.get(name, name)
        self.console.print(f"[green]✓[/green] {escape(text)} [dim]({now - self._t0:.1f} s)[/dim]")
        self._title, self._t0 = None, now
        if self._status is not None:
            self._status.update(escape(f"booting (after {text})"))

    def _finish(self) -> None:
        if self._title is not None:
            self.console.print(f"[green]✓[/green] {escape(self._title)} [dim]({time.monotonic() - self._t0:.1f} s)[/dim]")
            self._title = None

    def done(self, ok: bool = True) -> None:
        if ok:
            self._finish()
        self._closed = True
        if self._status is not None:
            self._status.stop()
            self._status = None


@contextmanager
def steps(console: Console = err) -> Iterator[Steps]:
    s = Steps(console)
    try:
        yield s
    except BaseException:
        s.done(ok=False)
        raise
    else:
        s.done()


def _show_prepared(p: Prepared) -> None:
    err.print(f"[dim]{escape(boot_summary(p))}[/dim]")
    for w in p.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}")


def boot_summary(p: Prepared) -> str:
    """The line saying what was chosen and why: kernel, image, accelerator, TCG threading."""
    line = f"kernel: {p.kernel.origin}; image: {p.image.reason}; accel: {p.accel.accel} ({p.accel.reason})"
    if p.tcg_thread is not None:
        line += f"; TCG threads: {p.tcg_thread.mode} ({p.tcg_thread.reason})"
    return line


def _check_problems(m: Machine) -> None:
    """Warn about guest set-up failures and oopses/WARNs that did not stop the guest."""
    for line in m.vm.guest_failures:
        err.print(f"[yellow]guest:[/yellow] {escape(line)}")
    for p in m.problems():
        err.print(f"[yellow]guest kernel reported:[/yellow] {escape(p.line)}")


def nodes_table(g: Snapshot, title: str = "guest NUMA nodes") -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("node", "CPUs", "MemTotal", "MemFree", "tier", "masks"):
        table.add_column(col, justify="left" if col in ("CPUs", "masks") else "right")
    mask_names = [m for m in g.masks if m.startswith("has_")]
    for nid, n in sorted(g.nodes.items()):
        in_masks = [m[4:] for m in mask_names if nid in g.masks[m]]
        table.add_row(str(nid), escape(str(n.cpus)) or "—", format_size(n.mem_total - n.mem_total % (1 << 20)) if n.mem_total else "0",
                      format_size(n.mem_free - n.mem_free % (1 << 20)) if n.mem_free else "0",
                      str(n.tier) if n.tier is not None else "—", escape(",".join(in_masks)))
    return table


def show_guest(m: Machine) -> None:
    numactl = m.run("numactl -H", timeout=60, check=False)
    out.print(numactl.stdout.rstrip(), markup=False)
    out.print(nodes_table(snapshot(m, boot_log=False)))


# --- commands -------------------------------------------------------------------

def boot_machine(args: argparse.Namespace, *, baseline: bool = False,
                 on_prepared: Callable[[Prepared], None] | None = None, **kw) -> Machine:
    """:func:`harness.boot.boot` with the command line's options and progress shown; on failure
    nothing is left running. ``baseline=False`` (the default here): a user's own shell keeps the
    kernel's knobs as they boot. ``on_prepared(p)`` is called before QEMU starts."""
    kspec = KernelSpec.from_env(args.kernel, args.modules, args.kernel_tree, args.kernel_config)

    def prepared(p: Prepared) -> None:
        _show_prepared(p)
        if on_prepared is not None:
            on_prepared(p)

    with steps() as st:
        m = boot(args.topology, kernel=kspec, accel=args.accel, qemu=args.qemu, ssh_port=args.ssh_port,
                 tcg_thread=args.tcg_thread, setup=not args.no_setup, baseline=baseline,
                 qemu_args=getattr(args, "qemu_arg", None) or (),
                 step=st.step, progress=st.detail, on_milestone=st.milestone, on_prepared=prepared, **kw)
        try:
            notes = _boot_notes(m)
        except BaseException:
            m.shutdown()
            raise
    for note in notes:
        err.print(note)
    return m


def _boot_notes(m: Machine) -> list[str]:
    """What the guest set-up did and the kernel features the topology requires but lacks; lines to show."""
    notes: list[str] = []
    for r in m.setup.regions:
        where = f"node {r.node}" if r.node is not None else (f"/dev/{r.dax}" if r.dax else "not onlined")
        ns = f", {r.namespace} {r.labels}" if r.namespace else ""
        notes.append("[dim]" + escape(f"region {r.name}: {format_size(r.size)} {r.mode} from {', '.join(r.memdevs)} "
                                      f"-> {where} ({r.online}{ns})") + "[/dim]")
    for pv in m.setup.provisioned:
        notes.append("[dim]" + escape(f"provisioned node {pv.node} via {pv.via}: {format_size(pv.bytes)} online"
                                      + (f" ({pv.dax})" if pv.dax else "")) + "[/dim]" if pv.ok else
                     f"[yellow]skipped:[/yellow] {escape(f'node {pv.node} via {pv.via}: {pv.reason}')}")
    notes += [f"[yellow]warning:[/yellow] {escape(msg)}" for msg in m.unmet_requirements()]
    return notes


def cmd_boot(args: argparse.Namespace) -> int:
    with boot_machine(args) as m:
        vm = m.vm
        show_guest(m)
        _check_problems(m)
        if sys.stdin.isatty() and sys.stdout.isatty() and not args.no_shell:
            if args.console:
                err.print("[dim]serial console; Ctrl-] leaves and shuts the VM down[/dim]")
                vm.console_interact()
            else:
                err.print("[dim]guest shell; exit leaves and shuts the VM down[/dim]")
                vm.shell()
        with steps() as st:
            st.step("shutting down")
            vm.shutdown()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Exit with the guest command's status; :data:`BAD_KERNEL` when the kernel oopsed or hit a BUG
    (at boot or during the command), so ``git bisect run`` marks it bad; 125 when the harness could
    not run (see :mod:`harness.errors`)."""
    line = guest_command(list(args.cmd))
    with boot_machine(args) as m:
        result = m.vm.run(line, timeout=args.timeout, check=False, on_output=stream_output)
        _check_problems(m)
        broken = [p for p in m.problems() if p.kind in BAD_KERNEL_KINDS]
    if broken:
        err.print(f"[red]error:[/red] the guest kernel reported {broken[0].kind}: {escape(broken[0].line)} "
                  f"(exit {BAD_KERNEL}: a bad kernel)", soft_wrap=True)
        return BAD_KERNEL
    return report_command_end(result)


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    """``boot`` and ``run``."""
    b = sub.add_parser("boot", help="boot a topology, show its nodes, open a shell (shuts down on exit)")
    boot_options(b)
    b.add_argument("--console", action="store_true", help="open the serial console instead of an SSH shell")
    b.add_argument("--no-shell", action="store_true", help="show the nodes and shut down")
    command("boot")(cmd_boot)

    r = sub.add_parser("run", help="boot, run one guest command, shut down; exits with its status",
                       usage="harness run TOPOLOGY [options] -- CMD [ARGS...]")
    boot_options(r)
    r.add_argument("--timeout", type=seconds, default=600, help="seconds the guest command may take (default 600)")
    r.set_defaults(cmd=[])  # everything after "--" (split off in harness.cli.main)
    command("run")(cmd_run)
