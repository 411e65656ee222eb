"""``harness stats NAME``: one statistics snapshot of a background VM (``harness up``), as a table
or JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from harness.cli.common import vm_name
from harness.cli.vms import attach_vm
from harness.stats import Snapshot, snapshot
from harness.stats.classes import mask_meaning
from harness.units import format_size

out = Console(highlight=False)


def _mib(n: int) -> str:
    return format_size(n - n % (1 << 20)) if n >= 1 << 20 else str(n)


def nodes_table(s: Snapshot) -> Table:
    t = Table(title="guest NUMA nodes", title_justify="left")
    for col in ("node", "CPUs", "MemTotal", "MemFree", "tier", "classes", "numa_hit", "numa_miss", "numa_foreign"):
        t.add_column(col, justify="left" if col in ("CPUs", "classes") else "right")
    for nid, n in s.nodes.items():
        classes = ", ".join(s.classes.names(nid))
        if nid in s.classes.features:
            classes += f" [dim](features: {','.join(s.classes.features[nid])})[/dim]"
        t.add_row(str(nid), str(n.cpus) or "—", _mib(n.mem_total), _mib(n.mem_free),
                  str(n.tier) if n.tier is not None else "—", classes,
                  str(n.numa_hit), str(n.numa_miss), str(n.numa_foreign))
    return t


def masks_table(s: Snapshot) -> Table:
    t = Table(title="node masks", title_justify="left")
    t.add_column("mask")
    t.add_column("nodes")
    t.add_column("meaning")
    for name, ids in s.masks.items():
        unknown = name in s.classes.unknown_masks
        t.add_row(f"[yellow]{name}[/yellow]" if unknown else name, str(ids) or "—", mask_meaning(name))
    return t


def show(s: Snapshot) -> None:
    out.print(nodes_table(s))
    out.print(masks_table(s))
    if s.tiers:
        out.print("memory tiers (fastest first): " + "  ".join(f"{t}: {ids}" for t, ids in s.tiers.items()))
    targets = "  ".join(f"{n} -> {t.preferred or 'none'}" + (f" (fallback {t.fallback})" if t.fallback else "")
                        for n, t in s.demotion_targets.items())
    out.print(f"demotion: {'on' if s.demotion_enabled else 'off'}; targets from the boot log: {targets or 'none printed'}")
    hmat = [f"{n}: {a.read_latency} ns {a.read_bandwidth} MB/s from {a.initiators}"
            for n, acc in s.hmat.items() for k, a in acc.items() if k == 0]
    if hmat:
        out.print("HMAT access0: " + "; ".join(hmat))
    out.print(f"[dim]THP {s.thp}; numa_balancing {s.numa_balancing}; counters folded: {s.refreshed}[/dim]")
    if s.numa_maps is not None:
        per: dict[int, int] = {}
        for m in s.numa_maps:
            for n, p in m.pages.items():
                per[n] = per.get(n, 0) + p
        out.print(f"pid {s.pid}: {len(s.numa_maps)} mappings; pages per node "
                  + ", ".join(f"N{n}={p}" for n, p in sorted(per.items())))
    if s.numa_stat is not None:
        anon = s.numa_stat.get("anon", {})
        out.print(f"cgroup {s.cgroup}: anon " + ", ".join(f"N{n}={_mib(v)}" for n, v in anon.items()))


def cmd_stats(args: argparse.Namespace) -> int:
    vm = attach_vm(args.name)
    try:
        s = snapshot(vm, pid=args.pid, cgroup=args.cgroup, cxl=args.cxl, daxctl=args.cxl)
    finally:
        vm.close()
    if args.json:
        print(json.dumps(s.to_json(), indent=1))
    else:
        show(s)
    return 0


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    p = sub.add_parser("stats", help="one NUMA statistics snapshot of a background VM")
    p.add_argument("name", nargs="?", type=vm_name, default="default", help="the VM's name (harness up --name)")
    p.add_argument("--json", action="store_true", help="print the whole snapshot as JSON")
    p.add_argument("--pid", type=int, help="also the numa_maps of this guest process")
    p.add_argument("--cgroup", help="also this cgroup's memory.numa_stat (path under /sys/fs/cgroup)")
    p.add_argument("--cxl", action="store_true", help="also `cxl list -vvv` and `daxctl list` (slower)")
    command("stats")(cmd_stats)
