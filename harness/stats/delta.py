"""What changed between two snapshots, counter by counter, with the kind of each counter respected.

The kernel's statistics are of two kinds, and subtracting the wrong kind misleads:

* **events** only ever grow (until reboot): ``numastat`` (numa_hit, numa_miss, ...), and in
  ``vmstat`` every name that does not start with ``nr_`` (pgalloc_*, pgdemote_*, pgmigrate_*,
  numa_*, pgpromote_*, thp_*, ...). An event's delta is the difference ``after - before``.
* **levels** go up and down: all of ``meminfo``, the zone page counts and watermarks, and in
  ``vmstat`` the ``nr_*`` names (nr_free_pages, nr_anon_pages, ...). A level's delta is the pair
  :class:`Level` (before, after); ``.change`` is their difference.

Exceptions to the ``nr_`` rule, from the kernel's own definitions: ``nr_dirtied``, ``nr_written``,
``nr_throttled_written``, ``nr_vmscan_write``, ``nr_vmscan_immediate_reclaim``,
``nr_foll_pin_acquired``, ``nr_foll_pin_released`` and the ``nr_tlb_*`` flush counts are events;
``workingset_nodes`` is a level. Listed in :data:`NR_EVENTS` / :data:`LEVELS_WITHOUT_NR`.

An event counter that went down means the snapshots are not from one boot: that raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .model import PAGE_SIZE, NodeStats, Snapshot
from .parse import StatsError

Kind = Literal["event", "level"]

NR_EVENTS = frozenset({
    "nr_dirtied", "nr_written", "nr_throttled_written", "nr_vmscan_write", "nr_vmscan_immediate_reclaim",
    "nr_foll_pin_acquired", "nr_foll_pin_released",
    "nr_tlb_remote_flush", "nr_tlb_remote_flush_received", "nr_tlb_local_flush_all", "nr_tlb_local_flush_one",
})
LEVELS_WITHOUT_NR = frozenset({"workingset_nodes"})


def vmstat_kind(name: str) -> Kind:
    """Whether a ``vmstat`` counter (global or per node) is an event or a level; see the module doc."""
    if name in NR_EVENTS:
        return "event"
    if name.startswith("nr_") or name in LEVELS_WITHOUT_NR:
        return "level"
    return "event"


def counter_kind(source: str, name: str) -> Kind:
    """``source`` is ``vmstat``, ``numastat``, ``meminfo`` or ``zone``."""
    if source == "numastat":
        return "event"
    if source == "vmstat":
        return vmstat_kind(name)
    if source in ("meminfo", "zone"):
        return "level"
    raise ValueError(f"unknown statistics source {source!r}")


@dataclass(frozen=True)
class Level:
    """A level counter before and after."""

    before: int
    after: int

    @property
    def change(self) -> int:
        return self.after - self.before

    def __str__(self) -> str:
        return f"{self.before} -> {self.after} ({self.change:+d})"


def _event(where: str, name: str, before: dict[str, int], after: dict[str, int]) -> int:
    if name not in after and name not in before:
        raise StatsError(f"{where} has no counter {name!r}")
    diff = after.get(name, 0) - before.get(name, 0)
    if diff < 0:
        raise StatsError(f"{where} {name} went down ({before.get(name)} -> {after.get(name)}): "
                         "the two snapshots are not from one boot")
    return diff


def _level(where: str, name: str, before: dict[str, int], after: dict[str, int]) -> Level:
    if name not in after and name not in before:
        raise StatsError(f"{where} has no counter {name!r}")
    return Level(before.get(name, 0), after.get(name, 0))


class NodeDelta:
    """One node's changes. Event counters read as ints, levels as :class:`Level`."""

    def __init__(self, before: NodeStats, after: NodeStats):
        self.before, self.after = before, after
        self.id = after.id
        self._where = f"node {self.id}"

    def numastat(self, name: str) -> int:
        return _event(f"{self._where} numastat", name, self.before.numastat, self.after.numastat)

    def vmstat(self, name: str) -> int:
        """An event counter's increase; a level raises (use :meth:`vmstat_level`)."""
        if vmstat_kind(name) == "level":
            raise StatsError(f"{name} is a level, not an event counter", hint="use vmstat_level(name)")
        return _event(f"{self._where} vmstat", name, self.before.vmstat, self.after.vmstat)

    def vmstat_level(self, name: str) -> Level:
        return _level(f"{self._where} vmstat", name, self.before.vmstat, self.after.vmstat)

    def meminfo(self, name: str) -> Level:
        """A meminfo line before and after (bytes, counts for ``HugePages_*``)."""
        return _level(f"{self._where} meminfo", name, self.before.meminfo, self.after.meminfo)

    @property
    def numa_hit(self) -> int:
        return self.numastat("numa_hit")

    @property
    def numa_miss(self) -> int:
        return self.numastat("numa_miss")

    @property
    def numa_foreign(self) -> int:
        return self.numastat("numa_foreign")

    @property
    def interleave_hit(self) -> int:
        return self.numastat("interleave_hit")

    @property
    def local_node(self) -> int:
        return self.numastat("local_node")

    @property
    def other_node(self) -> int:
        return self.numastat("other_node")

    @property
    def mem_free(self) -> Level:
        return self.meminfo("MemFree")

    @property
    def mem_used(self) -> Level:
        return self.meminfo("MemUsed")

    @property
    def pages_gained(self) -> int:
        """Pages the node's free count fell by (negative if it freed pages): ``nr_free_pages``.

        Freed pages first sit on per-CPU lists, which ``nr_free_pages`` does not count: after a
        process that allocated and exited, this stays positive for a while. For "how many pages
        were allocated here", use the node's ``numa_hit``/``numa_miss`` events instead."""
        return -self.vmstat_level("nr_free_pages").change

    def changed(self) -> dict[str, int]:
        """Every counter that moved: ``source:name -> change`` (events and levels alike)."""
        out: dict[str, int] = {}
        for src, b, a in (("numastat", self.before.numastat, self.after.numastat),
                          ("vmstat", self.before.vmstat, self.after.vmstat),
                          ("meminfo", self.before.meminfo, self.after.meminfo)):
            for k in a.keys() | b.keys():
                diff = a.get(k, 0) - b.get(k, 0)
                if diff:
                    out[f"{src}:{k}"] = diff
        return dict(sorted(out.items()))


class Delta:
    """``before.delta(after)``: per-node and global changes between two snapshots of one guest."""

    def __init__(self, before: Snapshot, after: Snapshot):
        self.before, self.after = before, after

    def node(self, nid: int) -> NodeDelta:
        return NodeDelta(self.before.node(nid), self.after.node(nid))

    def vm(self, name: str) -> int:
        """A global ``/proc/vmstat`` event counter's increase (e.g. ``pgdemote_direct``)."""
        if vmstat_kind(name) == "level":
            raise StatsError(f"{name} is a level, not an event counter", hint="use vm_level(name)")
        return _event("/proc/vmstat", name, self.before.vm, self.after.vm)

    def vm_level(self, name: str) -> Level:
        return _level("/proc/vmstat", name, self.before.vm, self.after.vm)

    def pages_gained(self, node: int) -> int:
        """Pages that left ``node``'s free lists (allocations minus frees), from ``nr_free_pages``."""
        return self.node(node).pages_gained

    def bytes_gained(self, node: int) -> int:
        return self.pages_gained(node) * PAGE_SIZE

    @property
    def demoted(self) -> int:
        """Pages demoted by any path: the sum of every ``pgdemote_*`` counter the kernel has."""
        return sum(self.demoted_by.values())

    @property
    def demoted_by(self) -> dict[str, int]:
        """Pages demoted per reclaim source, from every ``pgdemote_<source>`` counter the kernel
        has: ``kswapd``, ``direct``, ``khugepaged`` (6.12), and ``proactive`` (``memory.reclaim``)
        where the kernel counts it apart (7.2; before that it counts as ``direct``)."""
        return {k.removeprefix("pgdemote_"): self.vm(k) for k in sorted(self.after.vm)
                if k.startswith("pgdemote_")}

    @property
    def promoted(self) -> int:
        return self.vm("pgpromote_success") if "pgpromote_success" in self.after.vm else 0

    @property
    def migrated(self) -> int:
        return self.vm("pgmigrate_success")

    def zone(self, node: int, zone: str, field: str) -> Level:
        """A zone's page count or watermark (``free``, ``min``, ``low``, ``high``, ``boost``, ...)."""
        b, a = self.before.zone(node, zone), self.after.zone(node, zone)
        vb, va = getattr(b, field, None), getattr(a, field, None)
        if not isinstance(vb, int) or not isinstance(va, int):
            raise StatsError(f"zone {zone} of node {node} has no {field!r}")
        return Level(vb, va)

    def changed(self) -> dict[str, int]:
        """Every counter that moved, global and per node: ``name -> change``; for failure reports."""
        out: dict[str, int] = {}
        for k in self.after.vm.keys() | self.before.vm.keys():
            diff = self.after.vm.get(k, 0) - self.before.vm.get(k, 0)
            if diff:
                out[f"vm:{k}"] = diff
        for nid in sorted(self.after.nodes.keys() & self.before.nodes.keys()):
            for k, v in self.node(nid).changed().items():
                out[f"node{nid}:{k}"] = v
        return dict(sorted(out.items()))

    def summary(self, limit: int = 40) -> str:
        """A few readable lines: per node numa_hit/miss/foreign and pages gained, then the global
        event counters that moved most."""
        lines = []
        for nid in sorted(self.after.nodes.keys() & self.before.nodes.keys()):
            nd = self.node(nid)
            lines.append(f"node {nid}: numa_hit +{nd.numa_hit} numa_miss +{nd.numa_miss} "
                         f"numa_foreign +{nd.numa_foreign} pages gained {nd.pages_gained:+d}")
        moved = [(k, self.after.vm[k] - self.before.vm.get(k, 0)) for k in self.after.vm
                 if vmstat_kind(k) == "event" and self.after.vm[k] != self.before.vm.get(k, 0)]
        moved.sort(key=lambda kv: -abs(kv[1]))
        lines += [f"vm {k} +{v}" for k, v in moved[:limit]]
        return "\n".join(lines)
