"""``harness selftest [--topology T] [--kernel ...] PATH...``: kernel selftests in a guest, as a table.

Boots the topology (guest set-up included), sends each directory of KTAP
scripts or built kselftest target to the guest (:mod:`harness.selftest.run`),
runs every test with a per-test time limit and prints one row per test and
per KTAP result. Exit status 1 if any test failed, 0 otherwise (skips pass).

``harness selftest --kunit [--kunit-module NAME...] [SUITE_GLOB...]`` instead
reads the KUnit suites' results (:mod:`harness.selftest.kunit`): the built-in
suites that ran at boot and those of the modules it loads, one row per suite
and per case. A kernel without KUnit is a one-line error before booting when
its ``.config`` is known.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cli.common import machine_options
from harness.errors import GuestCommandError, UsageError
from harness.selftest.run import DEFAULT_TIMEOUT, Outcome, case_results, discover, run_suites

if TYPE_CHECKING:
    from harness.boot import Machine
    from harness.cli.boot import Steps

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow", "xfail": "cyan", "todo": "cyan",
         "xpass": "bold red", "error": "bold red"}


def results_table(outcomes: Sequence[Outcome], *, cases: bool = True, title: str = "selftests") -> Table:
    table = Table(title=title, title_justify="left")
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


def outcome_json(o: Outcome) -> dict:
    """One test's result with its KTAP cases, as ``selftest --json`` prints it."""
    return {"suite": o.suite, "test": o.test, "status": o.status, "seconds": round(o.seconds, 1), "reason": o.reason,
            "cases": [{"case": path, "status": r.status, "reason": r.reason or None, "diagnostics": list(r.diagnostics)}
                      for path, r in case_results(o)],
            "output": o.output}


def failure_output(o: Outcome, lines: int = 40) -> str:
    text = o.output.rstrip("\n").splitlines()
    return "\n".join(text[-lines:]) if text else "(no output)"


def cmd_selftest(args: argparse.Namespace) -> int:
    from harness.cli.boot import boot_machine, steps

    if args.kunit:
        return cmd_kunit(args)
    if args.kunit_module:
        raise UsageError("--kunit-module goes with --kunit")
    if not args.paths:
        raise UsageError("name a directory of tests or a test file (or use --kunit)")
    suites = [discover(Path(p)) for p in args.paths]  # fail before booting on a bad path
    n = sum(len(s.tests) for s in suites)
    with boot_machine(args) as m:
        with steps() as st:
            guest_setup(m, args, st)
            st.step(f"running {n} selftest(s), up to {args.timeout:g} s each")

            def done(o: Outcome) -> None:
                err.print(f"[{STYLE[o.status]}]{o.status:>4}[/] {o.suite}/{o.test} [dim]({o.seconds:.0f} s)[/dim]"
                          + (f" [dim]{escape(o.reason)}[/dim]" if o.reason else ""))

            outcomes = run_suites(m, [Path(p) for p in args.paths], timeout=args.timeout, say=st.detail,
                                  on_outcome=done)
            st.step("shutting down")
            m.shutdown()
    return report(outcomes, args)


def report(outcomes: Sequence[Outcome], args: argparse.Namespace, title: str = "selftests") -> int:
    """Save the outputs if asked, print the table, the failures' output and the counts; the exit status."""
    if args.save:
        for o in outcomes:
            dest = Path(args.save) / o.suite / f"{o.test}.out"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(o.output)
        err.print(f"[dim]outputs saved under {args.save}[/dim]")
    failed = [o for o in outcomes if o.status == "fail"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pass", "skip", "fail")}
    if getattr(args, "json", False):
        from harness.cli.main import print_json

        print_json({"ok": not failed, "counts": counts, "tests": [outcome_json(o) for o in outcomes]})
        return 1 if failed else 0
    out.print(results_table(outcomes, cases=not args.brief, title=title))
    for o in failed:
        err.print(f"\n[bold red]{o.suite}/{o.test}[/bold red]: {escape(o.reason)}; its output:")
        err.print(failure_output(o), markup=False)
    out.print(f"{counts['pass']} passed, {counts['skip']} skipped, {counts['fail']} failed")
    return 1 if failed else 0


def cmd_kunit(args: argparse.Namespace) -> int:
    from harness.boot.prepare import KernelSpec, resolve_kernel
    from harness.cli.boot import boot_machine, steps
    from harness.kernel.config import read_config
    from harness.selftest import kunit

    kernel = resolve_kernel(KernelSpec.from_env(args.kernel, args.modules, args.kernel_tree, args.kernel_config))
    kunit.check_kernel(kernel, read_config(kernel) if kernel.config else None)  # before booting
    kunit.module_files(kernel, args.kunit_module or [])  # a module it lacks: an error before booting too
    with boot_machine(args) as m:
        with steps() as st:
            guest_setup(m, args, st)
            st.step("KUnit results" + (f" (loading {', '.join(args.kunit_module)})" if args.kunit_module else ""))
            outcomes = kunit.run_kunit(m, kernel, args.paths, args.kunit_module or [], timeout=args.timeout,
                                       say=st.detail)
            st.step("shutting down")
            m.shutdown()
    return report(outcomes, args, title="KUnit")


def guest_setup(m: Machine, args: argparse.Namespace, st: Steps) -> None:
    """Run ``--guest-setup CMD`` once, before any test; a non-zero exit stops the run."""
    if not args.guest_setup:
        return
    st.step("guest set-up command")
    r = m.run(args.guest_setup, timeout=120, check=False)
    if r.exit_status != 0:
        raise GuestCommandError(f"--guest-setup exited with status {r.exit_status}: {args.guest_setup}",
                                detail=(r.stderr or r.stdout).strip() or None)


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    p = sub.add_parser("selftest", help="run directories of KTAP scripts or built kselftest targets in a guest, "
                                        "or report KUnit suites (--kunit)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="a directory of tests (its executable files) or one test file; "
                        "with --kunit: suite globs (e.g. 'damon*'; default: every suite)")
    p.add_argument("--kunit", action="store_true",
                   help="report the kernel's KUnit suites: built-in ones (run at boot) and --kunit-module ones")
    p.add_argument("--kunit-module", action="append", metavar="NAME",
                   help="with --kunit: load this KUnit test module in the guest first (its suites run): "
                        "one of the kernel's modules, or a .ko file built out of tree (repeatable)")
    p.add_argument("--topology", default="numa-basic", help="preset or YAML file to boot (default: numa-basic)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds each test (with --kunit: each module's load) may take (default {DEFAULT_TIMEOUT})")
    p.add_argument("--brief", action="store_true", help="one row per test, not per KTAP result")
    p.add_argument("--json", action="store_true", help="print the results as JSON (progress still goes to stderr)")
    p.add_argument("--guest-setup", metavar="CMD",
                   help="a guest shell command run once before the tests (e.g. 'echo 32 > /proc/sys/vm/nr_hugepages')")
    p.add_argument("--save", metavar="DIR", help="write each test's output to DIR/SUITE/TEST.out")
    machine_options(p)
    command("selftest")(cmd_selftest)
