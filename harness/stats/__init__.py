"""Guest NUMA statistics: one snapshot per SSH round trip, parsed into typed objects, subtracted
into deltas that know which counters are events and which are levels.

Owns: the guest-side dump (``harness/guest/files/snapshot.sh``), the pure parsers of what the
guest kernel prints (:mod:`.parse`), the typed :class:`Snapshot` (:mod:`.model`), :class:`Delta`
(:mod:`.delta`), the cxl/daxctl JSON (:mod:`.cxl`), and node classes from the node-mask table ``node_masks.yaml`` (:mod:`.classes`).

Must not know: SSH, QEMU, topologies. It parses text; to take a snapshot it needs only something
with ``run(command, timeout=..., check=...)`` (a :class:`harness.runner.GuestRunner`: a booted
machine, a VM, or anything shaped like one).
"""

from __future__ import annotations

from harness.runner import GuestRunner

from .classes import NodeClass, NodeClasses, classify_masks
from .collect import DEFAULT_TIMEOUT, collect
from .delta import Delta, Level, NodeDelta, counter_kind, vmstat_kind
from .model import NodeStats, Snapshot, from_dump
from .parse import StatsError


def snapshot(vm: GuestRunner, pid: int | None = None, cgroup: str | None = None, *, cxl: bool = False,
             daxctl: bool = False, boot_log: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """Read every NUMA statistic of the guest in one round trip (counters folded first).

    ``pid``: also that process's numa_maps; ``cgroup``: also that cgroup's memory.numa_stat
    (a path under /sys/fs/cgroup, or absolute); ``cxl``/``daxctl``: also their JSON listings
    (slower); ``boot_log=False`` skips the demotion targets read from dmesg.
    """
    return from_dump(collect(vm, pid=pid, cgroup=cgroup, cxl=cxl, daxctl=daxctl, boot_log=boot_log,
                             timeout=timeout))


__all__ = ["Delta", "Level", "NodeClass", "NodeClasses", "NodeDelta", "NodeStats", "Snapshot", "StatsError",
           "classify_masks", "counter_kind", "from_dump", "snapshot", "vmstat_kind"]
