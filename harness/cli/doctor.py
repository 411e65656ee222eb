"""``harness doctor [--json]``: what this host has and lacks, each finding with its fix (:mod:`harness.doctor`).

Exit status 0 when everything a boot requires is there, 125 otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from harness.errors import HARNESS_FAILURE


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.cli.main import console, escape, print_json
    from harness.doctor import failed_required, run_checks

    findings = run_checks(args.qemu, probe_kvm=not args.no_kvm_probe)
    bad = failed_required(findings)
    if args.json:
        print_json({"ok": not bad, "findings": [f.to_json() for f in findings]})
        return HARNESS_FAILURE if bad else 0
    out = console()
    for f in findings:
        mark = "[green]ok[/green]  " if f.ok else ("[red]FAIL[/red]" if f.required else "[yellow]warn[/yellow]")
        out.print(f"{mark} {escape(f.check)}: {escape(f.detail)}", soft_wrap=True)
        if f.fix and not f.ok:
            out.print(f"      fix: {escape(f.fix)}", soft_wrap=True)
    if bad:
        console(stderr=True).print(f"[red]error:[/red] {len(bad)} required check(s) failed: "
                                   f"{escape(', '.join(f.check for f in bad))}", soft_wrap=True)
        return HARNESS_FAILURE
    return 0


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    d = sub.add_parser("doctor", help="check this host: QEMU and the presets it runs, KVM, guest tools, cache, "
                                      "default kernel, pytest plugin; each finding with its fix")
    d.add_argument("--json", action="store_true", help="print the findings as JSON")
    d.add_argument("--qemu", help="QEMU binary [$NUMA_HARNESS_QEMU]")
    d.add_argument("--no-kvm-probe", action="store_true", help="do not boot a probe guest to see whether KVM works")
    command("doctor")(cmd_doctor)
