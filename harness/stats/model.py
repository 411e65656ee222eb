"""Typed snapshot of the guest's NUMA statistics, built from a parsed dump."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from harness.units import IdList

from . import parse as P
from .cxl import CxlInfo, DaxDevice, cxl_list, daxctl_list
from .parse import DemotionTarget, HmatAccess, Mapping, StatsError, Zone

if TYPE_CHECKING:
    from .classes import NodeClasses
    from .delta import Delta

PAGE_SIZE = 4096   # x86-64 base pages; the harness only boots x86-64 guests


@dataclass(frozen=True)
class NodeStats:
    """One node as the guest kernel reports it.

    ``meminfo`` is in bytes (kB lines converted; ``HugePages_*`` are counts), ``vmstat`` and
    ``numastat`` are as printed (pages and event counts).
    """

    id: int
    cpus: IdList
    meminfo: dict[str, int]
    vmstat: dict[str, int]
    numastat: dict[str, int]
    distance: dict[int, int]
    tier: int | None = None
    mem_features: int | None = None

    # meminfo, bytes
    @property
    def mem_total(self) -> int:
        return self.meminfo.get("MemTotal", 0)

    @property
    def mem_free(self) -> int:
        return self.meminfo.get("MemFree", 0)

    @property
    def mem_used(self) -> int:
        return self.meminfo.get("MemUsed", 0)

    # vmstat, pages
    @property
    def free_pages(self) -> int:
        return self.vmstat.get("nr_free_pages", 0)

    # numastat, events
    @property
    def numa_hit(self) -> int:
        return self.numastat.get("numa_hit", 0)

    @property
    def numa_miss(self) -> int:
        return self.numastat.get("numa_miss", 0)

    @property
    def numa_foreign(self) -> int:
        return self.numastat.get("numa_foreign", 0)

    @property
    def interleave_hit(self) -> int:
        return self.numastat.get("interleave_hit", 0)

    @property
    def local_node(self) -> int:
        return self.numastat.get("local_node", 0)

    @property
    def other_node(self) -> int:
        return self.numastat.get("other_node", 0)


@dataclass(frozen=True)
class Snapshot:
    """Everything one snapshot read. Build with :func:`from_dump` (or :func:`harness.stats.snapshot`)."""

    nodes: dict[int, NodeStats]
    vm: dict[str, int]                                 # /proc/vmstat
    zones: list[Zone]
    masks: dict[str, IdList]                           # possible, online, has_* (every one the kernel has)
    tiers: dict[int, IdList]                           # tier id -> nodes, ascending id (= faster first)
    demotion_enabled: bool | None
    demotion_targets: dict[int, DemotionTarget]        # from the boot log; empty if not read
    hmat: dict[int, dict[int, HmatAccess]]             # node -> access class -> attributes
    refreshed: bool = True                             # stat_refresh succeeded before reading
    thp: str | None = None                             # transparent_hugepage/enabled selection
    numa_balancing: int | None = None
    pid: int | None = None
    numa_maps: list[Mapping] | None = None             # of ``pid``
    cgroup: str | None = None
    numa_stat: dict[str, dict[int, int]] | None = None  # of ``cgroup``
    cxl: CxlInfo | None = None
    dax: list[DaxDevice] | None = None
    files: dict[str, list[str]] = field(default_factory=dict, repr=False)   # the raw lines, by path

    def node(self, nid: int) -> NodeStats:
        try:
            return self.nodes[nid]
        except KeyError:
            raise StatsError(f"the guest has no node {nid} (online: {self.masks.get('online', IdList())})") from None

    @property
    def with_memory(self) -> IdList:
        """The nodes in ``has_memory``."""
        return self.masks.get("has_memory", IdList())

    def distance(self, a: int, b: int) -> int:
        return self.node(a).distance[b]

    def tier_groups(self) -> list[IdList]:
        """Nodes grouped by memory tier, fastest (lowest tier id) first."""
        return list(self.tiers.values())

    def zone(self, node: int, name: str) -> Zone:
        for z in self.zones:
            if z.node == node and z.name == name:
                return z
        raise StatsError(f"node {node} has no zone {name!r}")

    def pages_on(self, node: int) -> int:
        """Pages of the snapshot's process (``pid``) resident on ``node``, from its numa_maps."""
        if self.numa_maps is None:
            raise StatsError("this snapshot has no numa_maps", hint="take it with pid=...")
        return sum(m.pages.get(node, 0) for m in self.numa_maps)

    @cached_property
    def classes(self) -> NodeClasses:
        from .classes import classify
        return classify(self)

    def delta(self, later: Snapshot) -> Delta:
        from .delta import Delta
        return Delta(self, later)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data (node lists as ``0-2`` strings)."""
        def ids(x: IdList) -> str:
            return str(x)
        return {
            "nodes": {str(n.id): {"cpus": ids(n.cpus), "tier": n.tier, "distance": {str(k): v for k, v in n.distance.items()},
                                  "mem_features": n.mem_features, "classes": [c.name for c in self.classes.of(n.id)],
                                  "meminfo": n.meminfo, "numastat": n.numastat, "vmstat": n.vmstat}
                      for n in self.nodes.values()},
            "masks": {k: ids(v) for k, v in self.masks.items()},
            "unknown_masks": list(self.classes.unknown_masks),
            "tiers": {str(k): ids(v) for k, v in self.tiers.items()},
            "demotion_enabled": self.demotion_enabled,
            "demotion_targets": {str(k): {"preferred": ids(t.preferred), "fallback": ids(t.fallback)}
                                 for k, t in self.demotion_targets.items()},
            "hmat": {str(n): {str(a): {"initiators": ids(h.initiators), "read_latency": h.read_latency,
                                       "write_latency": h.write_latency, "read_bandwidth": h.read_bandwidth,
                                       "write_bandwidth": h.write_bandwidth} for a, h in acc.items()}
                     for n, acc in self.hmat.items()},
            "zones": [{"node": z.node, "zone": z.name, "free": z.free, "min": z.min, "low": z.low, "high": z.high,
                       "boost": z.boost, "spanned": z.spanned, "present": z.present, "managed": z.managed}
                      for z in self.zones],
            "vm": self.vm,
            "refreshed": self.refreshed, "thp": self.thp, "numa_balancing": self.numa_balancing,
            "pid": self.pid,
            "numa_maps": None if self.numa_maps is None else [
                {"address": hex(m.address), "policy": m.policy, "pages": {str(k): v for k, v in m.pages.items()},
                 "file": m.file, "kind": m.kind, "anon": m.anon} for m in self.numa_maps],
            "cgroup": self.cgroup,
            "numa_stat": None if self.numa_stat is None else {
                k: {str(n): v for n, v in per.items()} for k, per in self.numa_stat.items()},
            "cxl": None if self.cxl is None else self.cxl.raw,
            "dax": None if self.dax is None else [d.raw for d in self.dax],
        }


def from_dump(text: str) -> Snapshot:
    """Parse the snapshot script's whole output."""
    d = P.split_dump(text)
    if not d.complete:
        raise StatsError("the statistics dump is cut short (no end marker)")
    if d.version != 1:
        raise StatsError(f"statistics dump format {d.version} is not the one this harness reads (1)")
    f = d.files
    masks = P.masks(f)
    online = masks.get("online", IdList())
    tiers = P.tiers(f)
    tier_of = {n: t for t, ns in tiers.items() for n in ns}
    meminfo, vmstat = P.node_files(f, "meminfo"), P.node_files(f, "vmstat")
    numastat, dist = P.node_files(f, "numastat"), P.node_files(f, "distance")
    cpus, feats = P.node_files(f, "cpulist"), P.node_files(f, "mem_features")
    nodes = {nid: NodeStats(id=nid, cpus=P.idlist(cpus.get(nid, [""])[0]),
                            meminfo=P.node_meminfo(meminfo.get(nid, [])), vmstat=P.key_values(vmstat.get(nid, [])),
                            numastat=P.key_values(numastat.get(nid, [])),
                            distance=P.distances(dist[nid][0], online) if dist.get(nid) else {},
                            tier=tier_of.get(nid), mem_features=P.hex_mask(feats.get(nid)))
             for nid in sorted(set(meminfo) | set(cpus))}
    pid = d.pid[0] if d.pid else None
    if d.pid and not d.pid[1]:
        raise StatsError(f"process {pid} has no readable /proc/{pid}/numa_maps in the guest (has it exited?)")
    if d.cgroup and not d.cgroup[1]:
        raise StatsError(f"the guest has no {d.cgroup[0]}/memory.numa_stat",
                         hint="is the memory controller enabled for that cgroup?")
    cg = d.cgroup[0] if d.cgroup else None
    nb = f.get("/proc/sys/kernel/numa_balancing")
    cxl = daxs = None
    if "cxl" in d.tools:
        cxl = cxl_list(d.tools["cxl"][1]) if d.tools["cxl"][0] == 0 else None
    if "daxctl" in d.tools:
        daxs = daxctl_list(d.tools["daxctl"][1]) if d.tools["daxctl"][0] == 0 else None
    return Snapshot(
        nodes=nodes, vm=P.key_values(f.get("/proc/vmstat", [])), zones=P.zoneinfo(f.get("/proc/zoneinfo", [])),
        masks=masks, tiers=tiers, demotion_enabled=P.flag(f.get("/sys/kernel/mm/numa/demotion_enabled")),
        demotion_targets=P.demotion_targets(d.demotion or []), hmat=P.hmat(f, d.links), refreshed=d.refreshed,
        thp=P.bracketed(f.get("/sys/kernel/mm/transparent_hugepage/enabled")),
        numa_balancing=int(nb[0]) if nb and nb[0].strip().isdigit() else None,
        pid=pid, numa_maps=P.numa_maps(f.get(f"/proc/{pid}/numa_maps", [])) if pid is not None else None,
        cgroup=cg, numa_stat=P.numa_stat(f.get(f"{cg}/memory.numa_stat", [])) if cg else None,
        cxl=cxl, dax=daxs, files=f)
