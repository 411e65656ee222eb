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

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.guest import workloads
from harness.guest.protocol import GUEST_RUN_DIR
from harness.runner import GuestRunner
from harness.stats import Snapshot, snapshot

from .targets import no_private_reason

MARGIN_MIB = 128
CPUSET = "/sys/fs/cgroup/nh-confined"
_IDS = itertools.count(1)


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
    out = f"{GUEST_RUN_DIR}/isolation-{next(_IDS)}.out"
    cmd = workloads.pressure("machine", f"total:{free_mib + MARGIN_MIB}", step_mib=16, hold_until_signal=True)
    if wrap:
        cmd = f"sh -c 'echo $$ > {wrap}/cgroup.procs && exec {cmd}'"
    m.run(f"mkdir -p {GUEST_RUN_DIR}; ( {cmd} > {out} 2> {out}.err; echo $? > {out}.rc ) >/dev/null 2>&1 &", timeout=30, check=False)
    deadline = time.monotonic() + timeout
    report: workloads.Result | None = None
    rc: int | None = None
    while report is None and rc is None:
        text = m.run(f"cat {out}; echo @@; cat {out}.rc 2>/dev/null", timeout=30, check=False).stdout
        head, _, tail = text.partition("@@")
        lines = [ln for ln in head.splitlines() if ln.startswith("{")]
        if lines:
            report = workloads.parse(lines[-1])
        elif tail.strip():
            rc = int(tail.split()[0])
        elif time.monotonic() > deadline:
            raise workloads.WorkloadError(f"the isolation workload did not report within {timeout:g} s")
        else:
            time.sleep(0.5)
    held = snapshot(m, boot_log=False)
    if report is not None:
        m.run(f"kill {report.pid}; n=0; while [ ! -e {out}.rc ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done",
              timeout=90, check=False)
    kb, kb0 = _kernel(held, node), _kernel(before, node)
    parts = {k: kb[k] - kb0[k] for k in kb}
    miss = before.delta(held).node(node).numa_miss
    if isinstance(report, workloads.PressureResult):
        return ModeResult("", "", True, f"held {report.allocated_mib} MiB", report.allocated_mib,
                          report.placement.on(node), miss, sum(parts.values()), parts)
    steps = workloads.parse_pressure_progress(m.run(f"cat {out}.err", timeout=30, check=False).stdout)
    reached = steps[-1].allocated_mib if steps else 0
    why = "killed by the OOM killer" if rc == 137 else f"exited with status {rc}"
    return ModeResult("", "", True, f"{why} after {reached} MiB", reached, None, miss, sum(parts.values()), parts)


def _with(r: ModeResult, mode: str, label: str, notes: str = "") -> ModeResult:
    return ModeResult(mode, label, r.measured, r.reason, r.hog_mib, r.user_pages, r.numa_miss, r.kernel_kb,
                      r.kernel_parts, notes)


def confine(m: GuestRunner, mems: str) -> str:
    """A cpuset cgroup with ``cpuset.mems`` = ``mems`` holding every task that can move; a note."""
    m.run(f"grep -qw cpuset /sys/fs/cgroup/cgroup.subtree_control || echo +cpuset > /sys/fs/cgroup/cgroup.subtree_control;"
          f" mkdir -p {CPUSET}; echo {mems} > {CPUSET}/cpuset.mems", timeout=30, check=False)
    r = m.run(f"moved=0; for p in $(cat /sys/fs/cgroup/cgroup.procs); do echo $p > {CPUSET}/cgroup.procs 2>/dev/null "
              f"&& moved=$((moved+1)); done; echo $moved $(wc -l < /sys/fs/cgroup/cgroup.procs)", timeout=60, check=False)
    moved, left = r.stdout.split()[:2]
    return f"cpuset.mems={mems}: {moved} tasks moved in, {left} left in the root (kernel threads cannot move)"


def release(m: GuestRunner) -> None:
    m.run(f"for p in $(cat {CPUSET}/cgroup.procs); do echo $p > /sys/fs/cgroup/cgroup.procs 2>/dev/null; done; "
          f"rmdir {CPUSET}", timeout=60, check=False)


def online_movable(m: GuestRunner, node: int) -> str:
    """Offline every block of ``node`` that can be, online it ``online_movable``; a note with the counts."""
    d = f"/sys/devices/system/node/node{node}"
    r = m.run(f"ok=0; bad=0; for b in {d}/memory[0-9]*; do if echo offline > $b/state 2>/dev/null; then "
              f"echo online_movable > $b/state && ok=$((ok+1)); else bad=$((bad+1)); fi; done; echo $ok $bad",
              timeout=300, check=False)
    ok, bad = (int(x) for x in r.stdout.split()[:2])
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
