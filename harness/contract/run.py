"""Running the contract checks in a booted guest: guest programs in, :class:`Verdict` s out.

One :func:`run_contract` call measures every promise for every target of one guest, the
pressure sequence once for all isolation promises (a hog holding the normal nodes' free memory
plus a margin, page cache written while it holds), so a topology costs one fill, not one per
check. Per node, first the driver and hot-unplug checks (:func:`lifecycle_checks`: memory the
later checks leave kernel pages on could not be offlined), then the placement checks, then the
skipped services (:func:`service_checks`, with a zram swap for reclaim and page-out, removed
after). The verdicts themselves are the pure functions of :mod:`.verdicts`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from harness.guest import background, cgroup, node_memory, services, workloads
from harness.guest.dmesg import cut_after_mark, mark_command
from harness.guest.protocol import GUEST_RUN_DIR
from harness.runner import GuestRunner
from harness.stats import Snapshot, snapshot
from harness.topology.model import Topology
from harness.vm.problems import find_kernel_problems

from . import verdicts as V
from .targets import Target, targets

#: The stock contract run: (topology, roles). memory-only and memmap-kmem give the negative controls
#: (an ordinary memory-only node, a kmem node); private-node the private node on a kernel with the series.
DEFAULT_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("memory-only", ("private", "control")), ("memmap-kmem", ("control",)), ("private-node", ("private",))]
#: On a kernel with the private-node series: private nodes made through its own API by the
#: harness's module (guest.provision via private-module), each with a different set of opt-ins;
#: private-mempolicy also holds an ordinary memory-only node, the control in the same guest.
SERIES_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("private-mempolicy", ("private", "control")), ("private-none", ("private",)), ("private-cram", ("private",))]

MIB_PAGES = 256
HOG_MARGIN_MIB = 128      # the hog asks for the normal nodes' free memory plus this
CACHE_MIB = 16            # page cache written while the hog holds
SERVICE_MIB = 4           # pages put on the node for each service check
SWAP_MIB = 64             # the zram swap the reclaim and MADV_PAGEOUT checks swap to
KSM_WAIT_S = 15           # how long KSM gets to merge the node's identical pages
REBIND_CYCLES = 3
OFFLINE_LIMIT_S = 60      # each memory block's offline write, at most
CGROUP = f"{cgroup.ROOT}/nh-contract"
_IDS = itertools.count(1)


def start(m: GuestRunner, command: str, timeout: float = 300) -> background.Started:
    """Start a holding guest program in the background; its pid and report once it has printed."""
    return background.start(m, command, timeout=timeout, name="contract")


def stop(m: GuestRunner, pid: int) -> None:
    background.stop(m, pid)



def _kernel_bytes(s: Snapshot, nid: int) -> int:
    mi = s.node(nid).meminfo
    return sum(mi.get(k, 0) for k in ("Slab", "PageTables", "KernelStack"))


def pressure_sequence(m: GuestRunner, ts: list[Target], before: Snapshot) -> list[V.Verdict]:
    """Hog the normal nodes, write page cache while it holds; isolation verdicts for every target."""
    nodes = [t.node for t in ts if t.node is not None]
    normal = [n for n in before.classes.nodes("cpu") if n not in nodes]
    free = sum(before.node(n).mem_free for n in normal) >> 20
    cache = f"{GUEST_RUN_DIR}/contract-cache"
    got = background.launch(m, workloads.pressure("machine", f"total:{free + HOG_MARGIN_MIB}", step_mib=16,
                                                  hold_until_signal=True), name="contract")
    report = got.report if got.state == "reported" else None
    if report is None and got.rc != 128 + 9:
        raise workloads.WorkloadError(f"the hog {got.state} before reporting (status {got.rc})", detail=(got.out + got.err)[-2000:])
    if report is None:
        # SIGKILLed before its report: nothing to fall back to (no node takes the overflow, no
        # swap), so the OOM killer ended the hog
        held = snapshot(m, boot_log=False)
        m.run(f"dd if=/dev/zero of={cache} bs=1M count={CACHE_MIB} 2>/dev/null; sync", timeout=120)
        after = snapshot(m, boot_log=False)
        m.run(f"rm -f {cache}", timeout=30, check=False)
        hog = (f"hog of normal nodes' free {free} MiB + {HOG_MARGIN_MIB}, killed (OOM) after {got.progress_mib()} MiB: "
               "it had nowhere to fall back to")
    else:
        try:
            assert isinstance(report, workloads.PressureResult)
            held = snapshot(m, boot_log=False)
            m.run(f"dd if=/dev/zero of={cache} bs=1M count={CACHE_MIB} 2>/dev/null; sync", timeout=120)
            after = snapshot(m, boot_log=False)
            m.run(f"rm -f {cache}", timeout=30, check=False)
        finally:
            stop(m, got.pid)
        hog = f"hog of {report.allocated_mib} MiB (normal nodes' free {free} MiB + {HOG_MARGIN_MIB})"
    out = []
    for t in ts:
        if t.node is None:
            continue
        n = t.node
        pages = report.placement.on(n) if isinstance(report, workloads.PressureResult) else 0
        miss = before.delta(held).node(n).numa_miss
        hog_mib = report.allocated_mib if isinstance(report, workloads.PressureResult) else 0
        if t.role == "private" and t.allows("demotion") and pages:
            # a demotion target takes the hog's pages by reclaim, not by allocation: only a fallback
            # allocation onto it (numa_miss) breaks the promise there
            demoted = before.delta(held).demoted
            out.append(V.isolation("isolation.anon", t, miss, f"{hog}: {pages} pages on node {n}, which opted into "
                                   f"demotion (pgdemote_* +{demoted}); its numa_miss +{miss} (allocations that fell "
                                   "back onto it)", pages=pages, numa_miss=miss, demoted=demoted, hog_mib=hog_mib))
        else:
            out.append(V.isolation("isolation.anon", t, pages, f"{hog}: {pages} pages on node {n} (its numa_miss "
                                   f"+{miss})", pages=pages, numa_miss=miss, hog_mib=hog_mib))
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


def node_checks(m: GuestRunner, t: Target, s: Snapshot, orders: dict[int, list[int]],
                threads: dict[str, set[int]]) -> list[V.Verdict]:
    """Every check of one real target but the pressure sequence."""
    n = t.node
    assert n is not None
    out = [V.fallback(t, orders), V.node_kthreads(t, threads), V.demotion(t, s.demotion_targets)]
    raw = m.run(f"numactl --interleave=all {workloads.place(16)}", timeout=120, check=False)
    if raw.exit_status != 0:
        # numactl's "all" is the task's Mems_allowed: a kernel may refuse the very policy it lists
        allowed = m.run("grep Mems_allowed_list /proc/self/status", timeout=30, check=False).stdout.split()[-1:]
        out.append(V.interleave_refused(t, (raw.stderr or raw.stdout).strip().splitlines()[-1:], allowed))
    else:
        r = workloads.parse(raw.stdout)
        assert isinstance(r, workloads.PlaceResult) and r.placement is not None
        out.append(V.isolation("isolation.interleave", t, r.placement.on(n), f"16 MiB under numactl "
                               f"--interleave=all: {r.placement.on(n)} of {r.placement.total} pages on node {n}",
                               per_node={str(k): v for k, v in r.placement.nodes.items()}))
    huge = services.parse_hugetlb(m.run(services.hugetlb(n, 4), timeout=60).stdout)
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


def _meminfo_pages(before: Snapshot, after: Snapshot, n: int, key: str) -> int:
    """How a node meminfo line (bytes) changed, in 4 KiB pages."""
    return before.delta(after).node(n).meminfo(key).change // 4096


@contextmanager
def _held_on(m: GuestRunner, n: int, wrap: Callable[[str], str] = str, **options: Any) -> Iterator[tuple[int, int]]:
    """:data:`SERVICE_MIB` bound to node ``n`` by a ``place`` that holds them (its command line
    passed through ``wrap``): (pid, pages it placed on ``n``) while it holds; stopped after."""
    held_by = start(m, wrap(workloads.place(SERVICE_MIB, policy="bind", nodes=[n], hold_until_signal=True,
                                            **options)))
    pid, report = held_by.pid, held_by.report
    try:
        assert isinstance(report, workloads.PlaceResult)
        yield pid, report.placement.on(n) if report.placement else 0
    finally:
        stop(m, pid)


def service_checks(m: GuestRunner, t: Target) -> list[V.Verdict]:
    """mlock, MADV_COLD, MADV_PAGEOUT, memory.reclaim, KSM and compaction, each on
    :data:`SERVICE_MIB` placed on the node by mbind: did the service act on them?"""
    n = t.node
    assert n is not None
    if t.allows("mempolicy") is not True:
        return V.services_skipped(t, f"pages reach node {n} for these checks through mbind, and the node's mempolicy "
                                  f"opt-in is {'unknown' if t.allows('mempolicy') is None else 'off'}: {t.source}")
    out: list[V.Verdict] = []

    def held(step: Callable[[int, int], V.Verdict], **options: Any) -> None:
        with _held_on(m, n, **options) as (pid, placed):
            out.append(step(pid, placed))

    before = snapshot(m, boot_log=False)

    def mlocked(pid: int, placed: int) -> V.Verdict:
        got = _meminfo_pages(before, snapshot(m, boot_log=False), n, "Mlocked")
        return V.service("services.mlock", t, placed, got, f"mlock of {placed} pages on node {n}: its Mlocked "
                         f"{got:+d} pages", mlocked=got)
    held(mlocked, mlock=True)

    # MADV_COLD deactivates through the classic LRU lists; the multi-gen LRU ages folios its own way
    has = services.parse_probe(m.run(services.probe(n), timeout=30).stdout)
    lru_gen = has.lru_gen
    if lru_gen:
        m.run(services.lru_gen("n"), timeout=30)
    try:
        # new anonymous pages start on the inactive list (mm/swap.c since 5.9): what placing the same
        # pages without MADV_COLD adds to Inactive(anon) is the baseline MADV_COLD has to beat
        born_before = snapshot(m, boot_log=False)
        with _held_on(m, n):
            born = _meminfo_pages(born_before, snapshot(m, boot_log=False), n, "Inactive(anon)")
        cold_before = snapshot(m, boot_log=False)

        def cold(pid: int, placed: int) -> V.Verdict:
            got = _meminfo_pages(cold_before, snapshot(m, boot_log=False), n, "Inactive(anon)")
            return V.cold(t, placed, got, born)
        held(cold, madvise="cold")
    finally:
        if lru_gen:
            m.run(services.lru_gen(lru_gen), timeout=30, check=False)

    swap = node_memory.parse_swap(m.run(node_memory.swap_on(SWAP_MIB), timeout=60, check=False).stdout)
    if not swap.ok:
        out += V.services_skipped(t, f"no swap for reclaim to move anonymous pages to: {swap.reason}",
                                  ("services.pageout", "services.reclaim"))
    else:
        try:
            r = workloads.run(m, workloads.place(SERVICE_MIB, policy="bind", nodes=[n], madvise="pageout"))
            assert isinstance(r, workloads.PlaceResult)
            placed = r.placement.on(n) if r.placement else 0
            after = r.madvise.placement.on(n) if r.madvise and r.madvise.placement else placed
            refused = f" (madvise refused: {r.madvise.refusal.error})" if r.madvise and r.madvise.refusal else ""
            out.append(V.service("services.pageout", t, placed, placed - after, f"MADV_PAGEOUT on {placed} pages on "
                                 f"node {n}: {after} still there{refused}", still_on_node=after))
            out.append(_reclaim(m, t))
        finally:
            m.run(node_memory.swap_off(), timeout=120, check=False)

    def merged(pid: int, placed: int) -> V.Verdict:
        got = services.parse_ksm(m.run(services.ksm(pid, placed // 2, KSM_WAIT_S), timeout=KSM_WAIT_S + 90).stdout)
        return V.service("services.ksm", t, placed, got, f"KSM running {KSM_WAIT_S} s at most over {placed} identical "
                         f"pages on node {n}: {got} merged", merged=got)
    if not has.ksm:
        out += V.services_skipped(t, "the kernel has no KSM (/sys/kernel/mm/ksm)", ("services.ksm",))
    else:
        held(merged, mergeable=True)

    def compacted(pid: int, placed: int) -> V.Verdict:
        scanned = snapshot(m, boot_log=False)
        services.parse_compact(m.run(services.compact(n), timeout=300).stdout)
        got = scanned.delta(snapshot(m, boot_log=False)).vm("compact_migrate_scanned")
        return V.service("services.compaction", t, placed, got, f"compacting node {n} holding {placed} of our pages: "
                         f"compact_migrate_scanned +{got}", migrate_scanned=got)
    if not has.compact:
        out += V.services_skipped(t, f"the kernel has no /sys/devices/system/node/node{n}/compact (CONFIG_COMPACTION)",
                                  ("services.compaction",))
    else:
        held(compacted)
    order = list(V.SERVICE_PROMISES)
    return sorted(out, key=lambda v: order.index(v.promise))


def _reclaim(m: GuestRunner, t: Target) -> V.Verdict:
    """memory.reclaim of a cgroup whose one process holds pages on the node (swap on)."""
    n = t.node
    assert n is not None
    m.run(cgroup.make(CGROUP, "memory"), timeout=30)
    try:
        # placed and left both from numa_maps, so the two counts are of the same thing
        with _held_on(m, n, lambda cmd: cgroup.run_in(CGROUP, cmd)) as (pid, _):
            placed = snapshot(m, pid=pid, boot_log=False).pages_on(n)
            r = cgroup.parse_reclaim(m.run(cgroup.reclaim(CGROUP, f"{SERVICE_MIB * 2}M"), timeout=120).stdout)
            left = snapshot(m, pid=pid, boot_log=False).pages_on(n)
    finally:
        m.run(cgroup.remove(CGROUP), timeout=30, check=False)
    said = "" if r.ok else f" (the write failed, the kernel reclaimed less than asked: {r.reason})"
    return V.service("services.reclaim", t, placed, placed - left, f"memory.reclaim of {SERVICE_MIB * 2}M in a cgroup "
                     f"holding {placed} pages on node {n}: {left} still there{said}", still_on_node=left)


def _kernel_reports_since(m: GuestRunner, mark: str) -> list:
    """Kernel problems (WARN, BUG ...) printed after the dmesg ``mark``."""
    return find_kernel_problems(cut_after_mark(m.run("dmesg", timeout=60, check=False).stdout, mark))


def _mark(m: GuestRunner, what: str) -> str:
    mark = f"contract {what} {next(_IDS)}"
    m.run(mark_command(mark), timeout=30, check=False)
    return mark


def lifecycle_checks(m: GuestRunner, t: Target) -> list[V.Verdict]:
    """The node's driver unbound and rebound :data:`REBIND_CYCLES` times; then its memory offlined
    with pages in use, every write under :data:`OFFLINE_LIMIT_S`, and onlined again."""
    n = t.node
    assert n is not None
    mark = _mark(m, f"rebind node {n}")
    limit = OFFLINE_LIMIT_S * 8 * REBIND_CYCLES
    r = node_memory.parse_rebind(m.run(node_memory.rebind(n, REBIND_CYCLES, OFFLINE_LIMIT_S, t.zone), timeout=limit,
                                       check=False).stdout)
    out = [V.rebind(t, r, REBIND_CYCLES, [] if r.skipped else _kernel_reports_since(m, mark))]
    if t.provisioned.startswith("memory-only"):
        out.append(V.verdict("hotplug.offline", t, "skip", f"node {n} is boot memory (SRAT), which Linux does not "
                             "hot-unplug: the check needs memory a driver added (memmap-kmem, dax_test, a CXL driver)"))
        return out
    if t.allows("mempolicy") is not True:
        out.append(V.verdict("hotplug.offline", t, "skip", f"pages reach node {n} for this check through mbind, and "
                             f"its mempolicy opt-in is not known to be on: {t.source}"))
        return out
    try:
        with _held_on(m, n) as (pid, placed):
            mark = _mark(m, f"offline node {n}")
            text = m.run(node_memory.offline(n, OFFLINE_LIMIT_S), timeout=OFFLINE_LIMIT_S * 16 + 60,
                         check=False).stdout
            o = node_memory.parse_offline(text)
            alive = m.run(f"kill -0 {pid}", timeout=30, check=False).exit_status == 0
            left = snapshot(m, pid=pid, boot_log=False).pages_on(n) if alive else 0
            problems = _kernel_reports_since(m, mark)
    finally:
        m.run(node_memory.online(n, t.zone), timeout=300, check=False)
    out.append(V.hot_unplug(t, o, placed, left, alive, OFFLINE_LIMIT_S, problems))
    return out


def expected_private(t: Topology | None) -> list[int]:
    if t is None:
        return []
    return sorted({pn.node for pn in t.guest.private_nodes}
                  | {p.node for p in t.guest.provision if p.via != "memmap-kmem"})


def run_contract(m: GuestRunner, topology: Topology | None = None, *, roles: Iterable[str] = ("private", "control"),
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
        # driver and hot-unplug first: memory another check left kernel pages on cannot be offlined
        say(f"contract: {t.label}: driver rebinding, hot-unplug")
        out += lifecycle_checks(m, t)
        out += node_checks(m, t, before, orders, threads)
        say(f"contract: {t.label}: services")
        out += service_checks(m, t)
    real = [t for t in ts if t.node is not None]
    if real:
        say("contract: pressure sequence (hog + page cache)")
        out += pressure_sequence(m, real, snapshot(m))
    order = list(V.PROMISES)
    return sorted(out, key=lambda v: (v.role != "private", v.node if v.node is not None else -1,
                                      order.index(v.promise)))
