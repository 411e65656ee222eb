"""``harness matrix`` and ``harness nightly``: the nightly matrix (:mod:`harness.ci`) printed, and run."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from harness.ci.matrix import cells, github_matrix, load
from harness.ci.nightly import run_cells
from harness.errors import UsageError


def cmd_matrix(args: argparse.Namespace) -> int:
    m = load(Path(args.file) if args.file else None)
    cs = cells(m, local=args.local)
    if args.json:
        print(json.dumps(github_matrix(cs), separators=(",", ":")))
        return 0
    rows = [("cell", "topology", "kernel", "accel", "why", "suite")]
    rows += [(c.id, c.topology, f"{c.kernel} ({c.kernel_spec})", c.accel, c.accel_why, " ".join(c.suite)) for c in cs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    print("nightly matrix" + (" (local)" if args.local else "") + f": {len(cs)} cells")
    for r in rows:  # plain columns: one line per cell, whole ids (a log or grep reads them)
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    m = load(Path(args.file) if args.file else None)
    cs = cells(m, local=args.local)
    if args.cell:
        chosen = [c for c in cs if c.id in args.cell]
        unknown = set(args.cell) - {c.id for c in chosen}
        if unknown:
            raise UsageError(f"no such cell: {', '.join(sorted(unknown))}", hint="harness matrix lists them")
        cs = chosen
    target = Path(args.out).resolve()
    outcomes = run_cells(cs, target, list(args.cmd or []), say=lambda s: print(s, flush=True))
    print((target / "summary.md").read_text(), flush=True)  # plain: a log keeps the table's rows whole
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    p = sub.add_parser("matrix", help="the nightly CI matrix: topologies x kernels, each cell's accelerator")
    p.add_argument("--json", action="store_true", help="as GitHub's strategy.matrix ({\"include\": [...]})")
    p.add_argument("--local", action="store_true", help="the reduced matrix make nightly runs here")
    p.add_argument("--file", help="another matrix file (default: the package's harness/ci/matrix.yaml)")
    command("matrix")(cmd_matrix)
    n = sub.add_parser("nightly", help="run matrix cells (pytest per cell: JUnit, HTML report, failure bundles)",
                       epilog="Words after -- go to every cell's pytest.")
    n.add_argument("--cell", action="append", help="run only this cell (repeatable; harness matrix lists them)")
    n.add_argument("--local", action="store_true", help="the reduced matrix (make nightly), under TCG")
    n.add_argument("--out", default="nightly-out", help="output folder, one sub-folder per cell (default: nightly-out)")
    n.add_argument("--file", help="another matrix file (default: the package's)")
    n.set_defaults(cmd=[])  # main() fills it with the words after --
    command("nightly")(cmd_nightly)
