"""``harness selftest [--topology T] [--kernel ...] PATH...``: kernel selftests in a guest, as a table.

Boots the topology (guest set-up included), sends each directory of KTAP
scripts or built kselftest target to the guest (:mod:`harness.selftest.run`),
runs every test with a per-test time limit and prints one row per test and
per KTAP result. Exit status 1 if any test failed, 0 otherwise (skips pass).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cli.boot import machine_options
from harness.errors import GuestCommandError
from harness.selftest.run import DEFAULT_TIMEOUT, Outcome, case_results, discover, run_suites

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow", "xfail": "cyan", "todo": "cyan",
         "xpass": "bold red", "error": "bold red"}


def results_table(outcomes: list[Outcome], *, cases: bool = True) -> Table:
    table = Table(title="selftests", title_justify="left")
    table.add_column("test", style="bold")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("reason / diagnostics")
    for o in outcomes:
        st = o.status
        table.add_row(f"{o.suite}/{o.test}", f"[{STYLE[st]}]{st.upper()}[/]", f"{o.seconds:.0f} s", escape(o.reason))
        if not cases:
            continue
        for path, r in case_results(o):
            s = r.status
            why = r.reason or ("; ".join(r.diagnostics[-2:]) if s in ("fail", "xpass", "error") else "")
            table.add_row(f"  {escape(path)}", f"[{STYLE.get(s, 'white')}]{s}[/]", "", escape(why))
    return table


def failure_output(o: Outcome, lines: int = 40) -> str:
    text = o.output.rstrip("\n").splitlines()
    return "\n".join(text[-lines:]) if text else "(no output)"


def cmd_selftest(args: argparse.Namespace) -> int:
    from harness.cli.boot import boot_vm, steps

    suites = [discover(Path(p)) for p in args.paths]  # fail before booting on a bad path
    n = sum(len(s.tests) for s in suites)
    _, vm = boot_vm(args)
    with vm:
        with steps() as st:
            if args.guest_setup:
                st.step("guest set-up command")
                r = vm.run(args.guest_setup, timeout=120)
                if r.exit_status != 0:
                    raise GuestCommandError(f"--guest-setup exited with status {r.exit_status}: {args.guest_setup}",
                                            detail=(r.stderr or r.stdout).strip() or None)
            st.step(f"running {n} selftest(s), up to {args.timeout:g} s each")

            def done(o: Outcome) -> None:
                err.print(f"[{STYLE[o.status]}]{o.status:>4}[/] {o.suite}/{o.test} [dim]({o.seconds:.0f} s)[/dim]"
                          + (f" [dim]{escape(o.reason)}[/dim]" if o.reason else ""))

            outcomes = run_suites(vm, [Path(p) for p in args.paths], timeout=args.timeout, say=st.detail,
                                  on_outcome=done)
            st.step("shutting down")
            vm.shutdown()
    if args.save:
        for o in outcomes:
            dest = Path(args.save) / o.suite / f"{o.test}.out"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(o.output)
        err.print(f"[dim]outputs saved under {args.save}[/dim]")
    out.print(results_table(outcomes, cases=not args.brief))
    failed = [o for o in outcomes if o.status == "fail"]
    for o in failed:
        err.print(f"\n[bold red]{o.suite}/{o.test}[/bold red]: {escape(o.reason)}; its output:")
        err.print(failure_output(o), markup=False)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pass", "skip", "fail")}
    out.print(f"{counts['pass']} passed, {counts['skip']} skipped, {counts['fail']} failed")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    p = sub.add_parser("selftest", help="run directories of KTAP scripts or built kselftest targets in a guest")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a directory of tests (its executable files) or one test file")
    p.add_argument("--topology", default="numa-basic", help="preset or YAML file to boot (default: numa-basic)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds each test may take (default {DEFAULT_TIMEOUT}, as kselftest)")
    p.add_argument("--brief", action="store_true", help="one row per test, not per KTAP result")
    p.add_argument("--guest-setup", metavar="CMD",
                   help="a guest shell command run once before the tests (e.g. 'echo 32 > /proc/sys/vm/nr_hugepages')")
    p.add_argument("--save", metavar="DIR", help="write each test's output to DIR/SUITE/TEST.out")
    machine_options(p)
    command("selftest")(cmd_selftest)
