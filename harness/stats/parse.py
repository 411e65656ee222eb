"""Pure parsers: the text the guest kernel prints -> plain Python values.

Each function takes lines (or one file's text) exactly as read from procfs/sysfs and knows
nothing about where they came from. :func:`split_dump` cuts the snapshot script's output
(``harness/guest/files/snapshot.sh``) into files and sections; the rest parse one format each.
Units are kept as the kernel prints them except where a name says otherwise (meminfo is
converted to bytes: see :func:`node_meminfo`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.units import IdList, SchemaError

NODE_DIR = "/sys/devices/system/node/"
TIER_DIR = "/sys/devices/virtual/memory_tiering/"


class StatsError(HarnessError):
    """Guest statistics could not be read or do not fit together (e.g. a delta across two boots)."""


# --- the dump as a whole ------------------------------------------------------------------

@dataclass
class Dump:
    """The snapshot script's output, cut up but not interpreted."""

    version: int = 0
    refreshed: bool = False
    files: dict[str, list[str]] = field(default_factory=dict)   # path -> lines, in dump order
    links: list[str] = field(default_factory=list)               # HMAT accessK/initiators/nodeN paths
    pid: tuple[int, bool] | None = None                          # (pid, numa_maps readable)
    cgroup: tuple[str, bool] | None = None                       # (cgroup dir, numa_stat readable)
    demotion: list[str] | None = None                            # boot-log lines, None = not asked
    tools: dict[str, tuple[int, str]] = field(default_factory=dict)  # "cxl"/"daxctl" -> (status, output)
    complete: bool = False


def split_dump(text: str) -> Dump:
    """Cut the dump into its sections. ``PATH:LINE`` lines go to ``files[PATH]``."""
    d = Dump()
    section = ""
    for line in text.splitlines():
        if line.startswith("@@ "):
            words = line[3:].split()
            section = words[0] if words else ""
            rest = words[1:]
            if section == "snapshot" and rest:
                d.version = int(rest[0])
            elif section == "refresh":
                d.refreshed = rest == ["0"]
            elif section == "link" and rest:
                d.links.append(rest[0])
            elif section == "pid" and len(rest) == 2:
                d.pid = (int(rest[0]), rest[1] == "present")
            elif section == "cgroup" and len(rest) == 2:
                d.cgroup = (rest[0], rest[1] == "present")
            elif section == "demotion":
                d.demotion = []
            elif section in ("cxl", "daxctl"):
                d.tools[section] = (int(rest[0]) if rest else -1, "")
            elif section == "end":
                d.complete = True
            continue
        if section == "files":
            path, sep, value = line.partition(":")
            if sep:
                d.files.setdefault(path, []).append(value)
        elif section == "demotion" and d.demotion is not None:
            d.demotion.append(line)
        elif section in ("cxl", "daxctl"):
            status, out = d.tools[section]
            d.tools[section] = (status, out + line + "\n")
    return d


def node_files(files: dict[str, list[str]], name: str) -> dict[int, list[str]]:
    """``{node id: lines}`` of ``/sys/devices/system/node/nodeN/<name>``, by node id."""
    pat = re.compile(re.escape(NODE_DIR) + r"node(\d+)/" + re.escape(name) + "$")
    out: dict[int, list[str]] = {}
    for path, lines in files.items():
        m = pat.match(path)
        if m:
            out[int(m.group(1))] = lines
    return dict(sorted(out.items()))


# --- small formats ------------------------------------------------------------------------

def idlist(text: str) -> IdList:
    """A sysfs node/CPU list (``0-2,4``; empty for none)."""
    text = text.strip()
    if not text:
        return IdList()
    try:
        return IdList.parse(text, "sysfs")
    except SchemaError as e:
        raise StatsError(f"cannot read {text!r} as a node or CPU list: {e.message}") from None


def key_values(lines: Iterable[str]) -> dict[str, int]:
    """``name value`` lines (``/proc/vmstat``, ``nodeN/vmstat``, ``nodeN/numastat``)."""
    out: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


_MEMINFO = re.compile(r"^Node\s+(\d+)\s+(\S+):\s+(\d+)(\s+kB)?\s*$")


def node_meminfo(lines: Iterable[str]) -> dict[str, int]:
    """``nodeN/meminfo``: kB lines in bytes; unit-less lines (``HugePages_*``) as counts."""
    out: dict[str, int] = {}
    for line in lines:
        m = _MEMINFO.match(line)
        if m:
            out[m.group(2)] = int(m.group(3)) * (1024 if m.group(4) else 1)
    return out


def distances(line: str, online: IdList) -> dict[int, int]:
    """``nodeN/distance``: one value per online node, in node order."""
    values = [int(v) for v in line.split()]
    if len(values) != len(online):
        raise StatsError(f"a node distance row has {len(values)} values for {len(online)} online nodes")
    return dict(zip(online, values))


def masks(files: dict[str, list[str]]) -> dict[str, IdList]:
    """Every ``/sys/devices/system/node/<mask>`` file that is a node list (``possible``, ``online``,
    ``has_*`` whatever their names), by name, in dump order."""
    out: dict[str, IdList] = {}
    for path, lines in files.items():
        if path.startswith(NODE_DIR):
            name = path[len(NODE_DIR):]
            if "/" not in name and (name in ("possible", "online") or name.startswith("has_")):
                out[name] = idlist(lines[0] if lines else "")
    return out


def tiers(files: dict[str, list[str]]) -> dict[int, IdList]:
    """Memory tiers ``{tier id: nodes}``, in NUMERIC order (sysfs lists them lexically: 35, 393, 4)."""
    pat = re.compile(re.escape(TIER_DIR) + r"memory_tier(\d+)/nodelist$")
    found = {}
    for path, lines in files.items():
        m = pat.match(path)
        if m:
            found[int(m.group(1))] = idlist(lines[0] if lines else "")
    return dict(sorted(found.items()))


def flag(lines: list[str] | None) -> bool | None:
    """A sysfs boolean (``true``/``false``/``1``/``0``); None if the file was absent."""
    if not lines:
        return None
    v = lines[0].strip().lower()
    return v in ("1", "true", "y", "yes", "on")


def bracketed(lines: list[str] | None) -> str | None:
    """The selected word of a ``always [madvise] never`` file."""
    if not lines:
        return None
    m = re.search(r"\[(\w+)\]", lines[0])
    return m.group(1) if m else lines[0].strip()


def hex_mask(lines: list[str] | None) -> int | None:
    if not lines or not lines[0].strip():
        return None
    return int(lines[0].strip(), 16)


# --- /proc/zoneinfo -----------------------------------------------------------------------

@dataclass(frozen=True)
class Zone:
    """One zone of ``/proc/zoneinfo``: its page counts and watermarks (pages) and its counters."""

    node: int
    name: str
    free: int
    min: int
    low: int
    high: int
    spanned: int
    present: int
    managed: int
    boost: int | None = None        # printed since 5.7
    promo: int | None = None        # printed with memory tiering (6.5+)
    protection: tuple[int, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)   # the zone's nr_* lines


_ZONE_HEAD = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)")
_ZONE_FIELDS = ("free", "boost", "min", "low", "high", "promo", "spanned", "present", "managed", "cma")


def zoneinfo(lines: Iterable[str]) -> list[Zone]:
    """``/proc/zoneinfo`` -> one :class:`Zone` per ``Node N, zone NAME`` block. The per-node stats
    block (printed under a node's first zone) is skipped: ``nodeN/vmstat`` has the same numbers."""
    zones: list[Zone] = []
    cur: dict[str, Any] | None = None
    part = ""

    def close() -> None:
        if cur is not None:
            f = cur["f"]
            zones.append(Zone(node=cur["node"], name=cur["name"], free=f.get("free", 0), min=f.get("min", 0),
                              low=f.get("low", 0), high=f.get("high", 0), spanned=f.get("spanned", 0),
                              present=f.get("present", 0), managed=f.get("managed", 0), boost=f.get("boost"),
                              promo=f.get("promo"), protection=cur["prot"], counters=cur["c"]))

    for raw in lines:
        m = _ZONE_HEAD.match(raw)
        if m:
            close()
            cur = {"node": int(m.group(1)), "name": m.group(2), "f": {}, "c": {}, "prot": ()}
            part = "head"
            continue
        if cur is None:
            continue
        line = raw.strip()
        if line == "per-node stats":
            part = "node"
        elif line.startswith("pages free"):
            part = "zone"
            cur["f"]["free"] = int(line.split()[-1])
        elif line == "pagesets" or line.startswith("node_unreclaimable") or line.startswith("start_pfn"):
            part = "tail"
        elif part == "zone":
            if line.startswith("protection:"):
                cur["prot"] = tuple(int(v) for v in re.findall(r"\d+", line))
                continue
            words = line.split()
            if len(words) == 2 and words[1].isdigit():
                if words[0] in _ZONE_FIELDS:
                    cur["f"][words[0]] = int(words[1])
                else:
                    cur["c"][words[0]] = int(words[1])
    close()
    return zones


# --- boot log: demotion targets -----------------------------------------------------------

@dataclass(frozen=True)
class DemotionTarget:
    preferred: IdList
    fallback: IdList


_DEMOTION = re.compile(r"Demotion targets for Node (\d+): (?:null|preferred: ([\d,-]*), fallback: ([\d,-]*))")


def demotion_targets(lines: Iterable[str]) -> dict[int, DemotionTarget]:
    """The kernel prints demotion targets only to its log, again each time tiers change (a CXL
    region onlined): the last line per node is the current one. ``null`` = no target."""
    out: dict[int, DemotionTarget] = {}
    for line in lines:
        m = _DEMOTION.search(line)
        if m:
            out[int(m.group(1))] = DemotionTarget(idlist(m.group(2) or ""), idlist(m.group(3) or ""))
    return dict(sorted(out.items()))


# --- HMAT access attributes ---------------------------------------------------------------

@dataclass(frozen=True)
class HmatAccess:
    """``nodeN/accessK/initiators``: the best performance from the initiators listed (access0: any
    initiator; access1: CPUs only). Latency in ns, bandwidth in MB/s, None where not reported."""

    node: int
    access: int
    initiators: IdList
    read_latency: int | None = None
    write_latency: int | None = None
    read_bandwidth: int | None = None
    write_bandwidth: int | None = None


_ACCESS = re.compile(re.escape(NODE_DIR) + r"node(\d+)/access(\d+)/initiators/(\S+)$")


def hmat(files: dict[str, list[str]], links: Iterable[str]) -> dict[int, dict[int, HmatAccess]]:
    """``{node: {access class: HmatAccess}}`` from the attribute files and initiator links."""
    attrs: dict[tuple[int, int], dict[str, int]] = {}
    inits: dict[tuple[int, int], list[int]] = {}
    for path in links:
        m = _ACCESS.match(path)
        if m and m.group(3).startswith("node") and m.group(3)[4:].isdigit():
            inits.setdefault((int(m.group(1)), int(m.group(2))), []).append(int(m.group(3)[4:]))
    for path, lines in files.items():
        m = _ACCESS.match(path)
        if m and lines and lines[0].strip().isdigit():
            attrs.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = int(lines[0])
    out: dict[int, dict[int, HmatAccess]] = {}
    for key in sorted(set(attrs) | set(inits)):
        a = attrs.get(key, {})
        out.setdefault(key[0], {})[key[1]] = HmatAccess(
            node=key[0], access=key[1], initiators=IdList(sorted(inits.get(key, []))),
            read_latency=a.get("read_latency"), write_latency=a.get("write_latency"),
            read_bandwidth=a.get("read_bandwidth"), write_bandwidth=a.get("write_bandwidth"))
    return out


# --- /proc/PID/numa_maps and memory.numa_stat ---------------------------------------------

@dataclass(frozen=True)
class Mapping:
    """One ``numa_maps`` line. ``pages`` is per node, in units of ``kernelpagesize_kB`` (4 KiB
    pages even inside a THP; a hugetlb mapping counts huge pages)."""

    address: int
    policy: str
    pages: dict[int, int]
    anon: int = 0
    dirty: int = 0
    mapped: int = 0
    file: str | None = None
    kind: str | None = None               # "heap", "stack" or "huge"
    kernelpagesize_kb: int | None = None
    fields: dict[str, str] = field(default_factory=dict)   # every key=value as printed

    @property
    def total_pages(self) -> int:
        return sum(self.pages.values())


def numa_maps(lines: Iterable[str]) -> list[Mapping]:
    out: list[Mapping] = []
    for line in lines:
        words = line.split()
        if len(words) < 2:
            continue
        pages: dict[int, int] = {}
        fields: dict[str, str] = {}
        kind = None
        for w in words[2:]:
            key, sep, value = w.partition("=")
            if not sep:
                kind = key
            elif re.fullmatch(r"N\d+", key):
                pages[int(key[1:])] = int(value)
            else:
                fields[key] = value
        ints = {k: int(v) for k, v in fields.items() if v.isdigit()}
        out.append(Mapping(address=int(words[0], 16), policy=words[1], pages=dict(sorted(pages.items())),
                           anon=ints.get("anon", 0), dirty=ints.get("dirty", 0), mapped=ints.get("mapped", 0),
                           file=fields.get("file"), kind=kind, kernelpagesize_kb=ints.get("kernelpagesize_kB"),
                           fields=fields))
    return out


def numa_stat(lines: Iterable[str]) -> dict[str, dict[int, int]]:
    """A cgroup's ``memory.numa_stat``: ``{item: {node: value}}`` (bytes for memory items,
    counts for the event items such as ``pgdemote_direct``)."""
    out: dict[str, dict[int, int]] = {}
    for line in lines:
        words = line.split()
        if not words:
            continue
        per = {}
        for w in words[1:]:
            m = re.fullmatch(r"N(\d+)=(\d+)", w)
            if m:
                per[int(m.group(1))] = int(m.group(2))
        out[words[0]] = per
    return out
