"""The isolation comparison: how much leaks onto one memory-only node under one pressure workload,
with no isolation, with cpuset confinement, with the node onlined ZONE_MOVABLE, and as a
private/managed node where the kernel has one.

The workload is the same in every mode: an anonymous hog of the CPU nodes' free memory plus
:data:`MARGIN_MIB`, no memory policy, THP off. Leaks are read from the kernel:

* user pages: the hog's own ``move_pages`` query of every page it holds (pages on the node), and
  the node's ``numa_miss`` (allocations that fell back onto it, counted even if the hog died);
* kernel memory: the node's ``Slab + PageTables + KernelStack`` before vs. while the hog holds.

Modes run in order on one guest; each changes the guest for good (the cpuset is removed after (b),
the node's blocks stay movable after (c)), so run it on a VM of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.guest import background, cgroup, node_memory, workloads
from harness.runner import GuestRunner
from harness.stats import Snapshot, snapshot

from .targets import no_private_reason

MARGIN_MIB = 128
CPUSET = f"{cgroup.ROOT}/nh-confined"


@dataclass(frozen=True)
class ModeResult:
    mode: str                 # a, b, c, d
    label: str
    measured: bool
    reason: str = ""          # why skipped, or what happened to the workload
    hog_mib: int = 0          # what the hog held (or reached before it died)
    user_pages: int | None = None   # the hog's pages on the node (None: it died before reporting)
    numa_miss: int = 0
    kernel_kb: int = 0
    kernel_parts: dict[str, int] = field(default_factory=dict)
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    node: int
    workload: str
    modes: list[ModeResult]

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "workload": self.workload, "modes": [m.to_json() for m in self.modes]}


def _kernel(s: Snapshot, n: int) -> dict[str, int]:
    return {k: s.node(n).meminfo.get(k, 0) // 1024 for k in ("Slab", "PageTables", "KernelStack")}


def hog(m: GuestRunner, node: int, free_mib: int, *, wrap: str = "", timeout: float = 300) -> ModeResult:
    """Run the workload (in the cgroup ``wrap`` joins, if given) and measure what lands on ``node``."""
    before = snapshot(m, boot_log=False)
    cmd = workloads.pressure("machine", f"total:{free_mib + MARGIN_MIB}", step_mib=16, hold_until_signal=True)
    if wrap:
        cmd = cgroup.run_in(wrap, cmd)
    run = background.launch(m, cmd, timeout=timeout, name="isolation")
    if run.state == "timeout":
        raise workloads.WorkloadError(f"the isolation workload did not report within {timeout:g} s")
    report = run.report
    held = snapshot(m, boot_log=False)
    if report is not None:
        background.stop(m, run.pid)
    kb, kb0 = _kernel(held, node), _kernel(before, node)
    parts = {k: kb[k] - kb0[k] for k in kb}
    miss = before.delta(held).node(node).numa_miss
    if isinstance(report, workloads.PressureResult):
        return ModeResult("", "", True, f"held {report.allocated_mib} MiB", report.allocated_mib,
                          report.placement.on(node), miss, sum(parts.values()), parts)
    reached, rc = run.progress_mib(), run.rc
    why = "killed by the OOM killer" if rc == 137 else f"exited with status {rc}"
    return ModeResult("", "", True, f"{why} after {reached} MiB", reached, None, miss, sum(parts.values()), parts)


def _with(r: ModeResult, mode: str, label: str, notes: str = "") -> ModeResult:
    return ModeResult(mode, label, r.measured, r.reason, r.hog_mib, r.user_pages, r.numa_miss, r.kernel_kb,
                      r.kernel_parts, notes)


def confine(m: GuestRunner, mems: str) -> str:
    """A cpuset cgroup with ``cpuset.mems`` = ``mems`` holding every task that can move; a note."""
    moved, left = cgroup.parse_confine(m.run(cgroup.confine(CPUSET, mems), timeout=60).stdout)
    return f"cpuset.mems={mems}: {moved} tasks moved in, {left} left in the root (kernel threads cannot move)"


def release(m: GuestRunner) -> None:
    m.run(cgroup.release(CPUSET), timeout=60, check=False)


def online_movable(m: GuestRunner, node: int) -> str:
    """Offline every block of ``node`` that can be, online it ``online_movable``; a note with the counts."""
    ok, bad = node_memory.parse_movable(m.run(node_memory.movable(node), timeout=300).stdout)
    return (f"{ok} of {ok + bad} memory blocks onlined movable" + (f"; {bad} could not be offlined (unmovable kernel "
            "pages on them, e.g. the node's own struct pages) and stay in their kernel zone" if bad else ""))


def compare(m: GuestRunner, node: int | None = None) -> Comparison:
    """Run (a)-(d) on the guest; ``node``: the memory-only node (default: the first one)."""
    s = snapshot(m)
    c = s.classes
    if node is None:
        candidates = [n for n in c.nodes("memory-only") if not c.has(n, "private")]
        if not candidates:
            from harness.errors import GuestCommandError
            raise GuestCommandError("the guest has no ordinary memory-only node to compare isolation on",
                                    hint="use a topology with a memory-only node, e.g. memory-only")
        node = candidates[0]
    cpu_nodes = list(c.nodes("cpu"))
    free = sum(s.node(n).mem_free for n in cpu_nodes) >> 20
    workload = (f"anonymous hog of the CPU nodes' free memory + {MARGIN_MIB} MiB ({free + MARGIN_MIB} MiB), "
                "no memory policy, THP off")
    modes = [_with(hog(m, node, free), "a", "no isolation")]
    note = confine(m, ",".join(map(str, cpu_nodes)))
    try:
        modes.append(_with(hog(m, node, free, wrap=CPUSET), "b", "cpuset: every task confined to the CPU nodes", note))
    finally:
        release(m)
    note = online_movable(m, node)
    modes.append(_with(hog(m, node, free), "c", f"node {node} onlined ZONE_MOVABLE", note))
    private = list(c.nodes("private"))
    if private:
        modes.append(_with(hog(m, private[0], free), "d", f"private/managed node {private[0]}"))
    else:
        modes.append(ModeResult("d", "private/managed node", False, no_private_reason(s)))
    return Comparison(node, workload, modes)
