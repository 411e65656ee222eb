"""``harness compare-isolation TOPOLOGY`` and ``harness contract-report``: the private/managed-node
contract from the command line (logic in :mod:`harness.contract`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.boot import Prepared
from harness.contract.isolation import compare
from harness.contract.replay import Recording
from harness.contract.report import Section, comparison_rows, markdown, to_json
from harness.contract.run import DEFAULT_CASES, SERIES_CASES, run_contract
from harness.errors import HarnessError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.cli.boot import boot_machine

    # the baseline: NUMA balancing off, THP off (exact 4 KiB counts), demotion as the topology says
    with boot_machine(args, baseline=True) as m:
        p = m.prepared
        err.print("[dim]running modes (a) no isolation, (b) cpuset, (c) ZONE_MOVABLE, (d) private node...[/dim]")
        c = compare(m, args.node)
    if args.json:
        print(json.dumps({"topology": p.loaded.name, "kernel": p.kernel.release, **c.to_json()}, indent=1))
        return 0
    wide = out if out.is_terminal else Console(highlight=False, width=150)
    t = Table(title=f"pages that leaked onto memory-only node {c.node} ({p.loaded.name}, kernel {p.kernel.release})",
              title_justify="left", caption=f"workload: {c.workload}", caption_justify="left")
    for col in ("mode", "isolation", "workload", "user pages on node", "node numa_miss",
                "kernel kB on node (slab / page tables / stacks)"):
        t.add_column(col, justify="right" if "node" in col else "left")
    notes = []
    for row in comparison_rows(c):
        t.add_row(*(escape(x) for x in row[:6]))
        if row[6]:
            notes.append(f"{row[0]} {row[6]}")
    wide.print(t)
    for n in notes:
        wide.print(escape(n), soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.cli.boot import boot_machine

    cases = [(t, r) for t, r in DEFAULT_CASES if not args.topology or t in args.topology]
    known = dict(SERIES_CASES)
    cases += [(t, known.get(t, ("private", "control"))) for t in (args.topology or []) if t not in dict(DEFAULT_CASES)]
    sections: list[Section] = []
    kernel = " ".join(f"--{o.replace('_', '-')} {getattr(args, o)}" for o in ("kernel", "kernel_tree", "modules")
                      if getattr(args, o, None))
    for topo, roles in cases:
        again = " ".join(x for x in ("harness contract-report", kernel, f"--topology {topo}") if x)
        ns = argparse.Namespace(**{**vars(args), "topology": topo, "no_setup": False, "ssh_port": None})
        prepared: list[Prepared] = []
        try:
            m = boot_machine(ns, baseline=True, on_prepared=prepared.append)
        except HarnessError as e:  # a failed guest set-up still names the kernel it ran on
            sections.append(Section(topo, prepared[0].kernel.release if prepared else "?", [], error=str(e),
                                    reproduce=again))
            continue
        with m:
            p = m.prepared
            try:
                provisioned = [f"{pv.via} node {pv.node}: " + (f"{pv.bytes >> 20} MiB online" if pv.ok else pv.reason)
                               for pv in m.setup.provisioned]
                provisioned += [f"guest.private_nodes node {pn.node} (private_node= on the command line)"
                                for pn in p.loaded.topology.guest.private_nodes]
                guest = Recording(m) if args.record else m
                verdicts = run_contract(guest, p.loaded.topology, roles=roles,
                                        say=lambda msg: err.print(f"[dim]{escape(msg)}[/dim]"))
                if isinstance(guest, Recording):
                    Path(args.record).mkdir(parents=True, exist_ok=True)
                    guest.save(Path(args.record) / f"{topo}.json.gz", topology=topo, kernel=p.kernel.release,
                               roles=list(roles), provisioned=provisioned)
                sections.append(Section(topo, p.kernel.release, provisioned, verdicts, reproduce=again))
            except HarnessError as e:
                sections.append(Section(topo, p.kernel.release, [], error=str(e), reproduce=again))
    text = markdown(sections)
    data = to_json(sections)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        err.print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    else:
        print(text)
    if args.json:
        print(json.dumps(data, indent=1))
    return 1 if any(v.outcome in ("fail", "xpass") for s in sections for v in s.verdicts) or \
        any(s.error for s in sections) else 0


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    from harness.cli.common import boot_options, machine_options

    c = sub.add_parser("compare-isolation", help="pages that leak onto a memory-only node: no isolation, cpuset, "
                       "ZONE_MOVABLE, private node")
    boot_options(c)
    c.add_argument("--node", type=int, help="the memory-only node (default: the first)")
    c.add_argument("--json", action="store_true", help="the same data as JSON")
    command("compare-isolation")(cmd_compare)

    r = sub.add_parser("contract-report", help="run the private/managed-node contract checks; a markdown table "
                       "for a list reply, and JSON")
    machine_options(r, one_vm=False)
    r.add_argument("--topology", action="append", dest="topology",
                   help="only this topology (repeatable; default: memory-only, memmap-kmem, private-node)")
    r.add_argument("--out", help="write the markdown here and the JSON beside it (.json)")
    r.add_argument("--json", action="store_true", help="also print the JSON")
    r.add_argument("--record", metavar="DIR", help="save every guest command and its answer as DIR/TOPOLOGY.json.gz "
                   "(harness.contract.replay replays the verdicts from it without a guest)")
    command("contract-report")(cmd_report)
