"""Running the contract checks in a booted guest: guest programs in, :class:`Verdict` s out.

One :func:`run_contract` call measures every promise for every target of one guest, the
pressure sequence once for all isolation promises (a hog holding the normal nodes' free memory
plus a margin, page cache written while it holds), so a topology costs one fill, not one per
check. The verdicts themselves are the pure functions of :mod:`.verdicts`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from harness.guest import workloads
from harness.guest.protocol import GUEST_RUN_DIR
from harness.stats import Snapshot, snapshot
from harness.topology.model import Topology

from . import verdicts as V
from .targets import Target, targets

#: The stock contract run: (topology, roles). memory-only and memmap-kmem give the negative controls
#: (an ordinary memory-only node, a kmem node); private-node the private node on a kernel with the series.
DEFAULT_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("memory-only", ("private", "control")), ("memmap-kmem", ("control",)), ("private-node", ("private",))]

MIB_PAGES = 256
HOG_MARGIN_MIB = 128      # the hog asks for the normal nodes' free memory plus this
CACHE_MIB = 16            # page cache written while the hog holds
HUGE = "hugepages/hugepages-2048kB/nr_hugepages"
_IDS = itertools.count(1)


class Guest(Protocol):
    def run(self, command: str, *, timeout: float = ..., check: bool = ...) -> Any: ...


def start(m: Guest, command: str, timeout: float = 300) -> tuple[int, workloads.Result]:
    """Start a holding guest program in the background; (pid, report) once it has printed."""
    out = f"{GUEST_RUN_DIR}/contract-{next(_IDS)}.out"
    pid = int(m.run(f"mkdir -p {GUEST_RUN_DIR}; {command} > {out} 2> {out}.err & echo $!", timeout=30)
              .stdout.split()[-1])
    deadline = time.monotonic() + timeout
    while True:
        text = m.run(f"cat {out}; kill -0 {pid} 2>/dev/null && echo RUNNING || tail -n 5 {out}.err",
                     timeout=30, check=False).stdout
        report = [ln for ln in text.splitlines() if ln.startswith("{")]
        if report:
            return pid, workloads.parse(report[-1])
        if "RUNNING" not in text:
            raise workloads.WorkloadError(f"background program exited before reporting: {command}", detail=text[-2000:])
        if time.monotonic() > deadline:
            stop(m, pid)
            raise workloads.WorkloadError(f"background program did not report within {timeout:g} s: {command}")
        time.sleep(0.3)


def stop(m: Guest, pid: int) -> None:
    m.run(f"kill {pid} 2>/dev/null; n=0; while kill -0 {pid} 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; "
          "n=$((n+1)); done", timeout=90, check=False)


def _kernel_bytes(s: Snapshot, nid: int) -> int:
    mi = s.node(nid).meminfo
    return sum(mi.get(k, 0) for k in ("Slab", "PageTables", "KernelStack"))


def pressure_sequence(m: Guest, ts: list[Target], before: Snapshot) -> list[V.Verdict]:
    """Hog the normal nodes, write page cache while it holds; isolation verdicts for every target."""
    nodes = [t.node for t in ts if t.node is not None]
    normal = [n for n in before.classes.nodes("cpu") if n not in nodes]
    free = sum(before.node(n).mem_free for n in normal) >> 20
    pid, report = start(m, workloads.pressure("machine", f"total:{free + HOG_MARGIN_MIB}", step_mib=16,
                                              hold_until_signal=True))
    try:
        assert isinstance(report, workloads.PressureResult)
        held = snapshot(m, boot_log=False)
        cache = f"{GUEST_RUN_DIR}/contract-cache"
        m.run(f"dd if=/dev/zero of={cache} bs=1M count={CACHE_MIB} 2>/dev/null; sync", timeout=120)
        after = snapshot(m, boot_log=False)
        m.run(f"rm -f {cache}", timeout=30, check=False)
    finally:
        stop(m, pid)
    out = []
    hog = f"hog of {report.allocated_mib} MiB (normal nodes' free {free} MiB + {HOG_MARGIN_MIB})"
    for t in ts:
        if t.node is None:
            continue
        n = t.node
        pages = report.placement.on(n)
        miss = before.delta(held).node(n).numa_miss
        out.append(V.isolation("isolation.anon", t, pages, f"{hog}: {pages} pages on node {n} (its numa_miss "
                               f"+{miss})", pages=pages, numa_miss=miss, hog_mib=report.allocated_mib))
        kb = (_kernel_bytes(held, n) - _kernel_bytes(before, n)) // 1024
        parts = {k: (held.node(n).meminfo.get(k, 0) - before.node(n).meminfo.get(k, 0)) // 1024
                 for k in ("Slab", "PageTables", "KernelStack")}
        out.append(V.isolation("isolation.kernel", t, max(kb, 0), f"during the {hog}: node {n} kernel memory "
                               f"{kb:+d} kB (" + ", ".join(f"{k} {v:+d}" for k, v in parts.items()) + ")",
                               kb=kb, **parts))
        fp = (after.node(n).meminfo.get("FilePages", 0) - held.node(n).meminfo.get("FilePages", 0)) // 1024
        out.append(V.isolation("isolation.pagecache", t, max(fp, 0) // 4, f"{CACHE_MIB} MiB written to a file "
                               f"while the hog held: node {n} FilePages {fp:+d} kB", file_kb=fp))
    return out


def node_checks(m: Guest, t: Target, s: Snapshot, orders: dict[int, list[int]],
                threads: dict[str, set[int]]) -> list[V.Verdict]:
    """Every check of one real target but the pressure sequence."""
    n = t.node
    assert n is not None
    out = [V.fallback(t, orders), V.node_kthreads(t, threads), V.demotion(t, s.demotion_targets)]
    r = workloads.run(m, f"numactl --interleave=all {workloads.place(16)}")
    assert isinstance(r, workloads.PlaceResult) and r.placement is not None
    out.append(V.isolation("isolation.interleave", t, r.placement.on(n), f"16 MiB under numactl --interleave=all: "
                           f"{r.placement.on(n)} of {r.placement.total} pages on node {n}",
                           per_node={str(k): v for k, v in r.placement.nodes.items()}))
    f = f"/sys/devices/system/node/node{n}/{HUGE}"
    got = m.run(f"echo 4 > {f} 2>/dev/null; cat {f}; echo 0 > {f}", timeout=60, check=False).stdout.split()
    huge = int(got[0]) if got and got[0].isdigit() else 0
    out.append(V.isolation("isolation.hugetlb", t, huge, f"asked node {n} for 4 huge pages (2 MiB): got {huge}",
                           huge_pages=huge))
    p = workloads.run(m, workloads.place(4, policy="bind", nodes=[n]))
    assert isinstance(p, workloads.PlaceResult)
    out.append(V.mbind(t, p.refusal, p.placement.on(n) if p.placement else 0, 4 * MIB_PAGES))
    mv = workloads.run(m, workloads.move(4, n))
    assert isinstance(mv, workloads.MoveResult)
    out.append(V.move_pages(t, mv.refusal, mv.status.on(n), 4 * MIB_PAGES))
    mg = workloads.run(m, workloads.migrate(s.classes.nodes("cpu")[0] if s.classes.nodes("cpu") else 0, n, size_mib=4))
    assert isinstance(mg, workloads.MigrateResult)
    out.append(V.migrate_pages(t, mg.refusal, mg.pages_after.on(n) if mg.pages_after else 0, 4 * MIB_PAGES))
    return out


def expected_private(t: Topology | None) -> list[int]:
    if t is None:
        return []
    return sorted({pn.node for pn in t.guest.private_nodes}
                  | {p.node for p in t.guest.provision if p.via != "memmap-kmem"})


def run_contract(m: Guest, topology: Topology | None = None, *, roles: Iterable[str] = ("private", "control"),
                 say: Callable[[str], None] | None = None) -> list[V.Verdict]:
    """Every promise for every target of the guest (of the given roles), in :data:`PROMISES` order."""
    say = say or (lambda _m: None)
    before = snapshot(m)
    ts = [t for t in targets(before, topology) if t.role in set(roles)]
    out: list[V.Verdict] = []
    dmesg = m.run("dmesg", timeout=60, check=False).stdout
    threads = V.kthreads(m.run("ps", timeout=30, check=False).stdout)
    orders = V.fallback_orders(dmesg)
    for t in ts:
        if t.node is None:
            out += V.placeholder(t)
            continue
        say(f"contract: {t.label}")
        srcs = "; ".join(k.source for k in before.classes.of(t.node) if k.name == "private") or "private"
        out.append(V.in_mask(t, expected_private(topology), srcs))
        out += node_checks(m, t, before, orders, threads)
    real = [t for t in ts if t.node is not None]
    if real:
        say("contract: pressure sequence (hog + page cache)")
        out += pressure_sequence(m, real, snapshot(m))
    order = list(V.PROMISES)
    return sorted(out, key=lambda v: (v.role != "private", v.node if v.node is not None else -1,
                                      order.index(v.promise)))
