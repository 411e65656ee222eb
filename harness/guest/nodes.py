"""The guest's NUMA nodes as the guest kernel reports them, parsed once into typed objects.

One shell command (:data:`NODES_COMMAND`) dumps, from sysfs: every
``/sys/devices/system/node/has_*`` / ``online`` / ``possible`` mask (names
move between kernels and patch series, so all are listed rather than a
fixed set), each online node's cpulist and meminfo, and the memory tiers.
:func:`parse_nodes` turns that text into :class:`GuestNodes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.units import IdList

NODES_COMMAND = r"""
cd /sys/devices/system/node || exit 1
for f in possible online has_*; do [ -f "$f" ] && echo "mask $f $(cat $f)"; done
for d in node[0-9]*; do
  n=${d#node}
  echo "cpus $n $(cat $d/cpulist)"
  sed -n "s/^Node $n \(MemTotal\|MemFree\|MemUsed\|FilePages\|AnonPages\):  *\([0-9]*\) kB/meminfo $n \1 \2/p" $d/meminfo
done
for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
  [ -d "$t" ] && echo "tier ${t##*memory_tier} $(cat $t/nodelist)"
done
true
"""


def _ids(text: str) -> IdList:
    text = text.strip()
    return IdList.parse(text, "sysfs") if text else IdList()


@dataclass(frozen=True)
class NodeInfo:
    id: int
    cpus: IdList
    mem_total: int          # bytes
    mem_free: int           # bytes
    tier: int | None        # memory_tierN the node is in, if any


@dataclass(frozen=True)
class GuestNodes:
    nodes: dict[int, NodeInfo]
    masks: dict[str, IdList] = field(default_factory=dict)   # "online", "has_memory", "has_cpu", ...
    tiers: dict[int, IdList] = field(default_factory=dict)   # tier id -> nodes, ascending = faster first

    @property
    def with_memory(self) -> IdList:
        return self.masks.get("has_memory", IdList())

    def tier_groups(self) -> list[IdList]:
        """Node groups by memory tier, fastest (lowest tier id) first."""
        return [self.tiers[k] for k in sorted(self.tiers)]


_LINE = re.compile(r"^(mask|cpus|meminfo|tier) (\S+)(?: (.*))?$")


def parse_nodes(text: str) -> GuestNodes:
    masks: dict[str, IdList] = {}
    cpus: dict[int, IdList] = {}
    mem: dict[int, dict[str, int]] = {}
    tiers: dict[int, IdList] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        kind, key, rest = m.group(1), m.group(2), (m.group(3) or "")
        if kind == "mask":
            masks[key] = _ids(rest)
        elif kind == "cpus":
            cpus[int(key)] = _ids(rest)
        elif kind == "meminfo":
            name, kb = rest.split()
            mem.setdefault(int(key), {})[name] = int(kb) * 1024
        elif kind == "tier":
            tiers[int(key)] = _ids(rest)
    tier_of = {n: t for t, ns in tiers.items() for n in ns}
    nodes = {nid: NodeInfo(id=nid, cpus=c, mem_total=mem.get(nid, {}).get("MemTotal", 0),
                           mem_free=mem.get(nid, {}).get("MemFree", 0), tier=tier_of.get(nid))
             for nid, c in sorted(cpus.items())}
    return GuestNodes(nodes=nodes, masks=masks, tiers=tiers)
