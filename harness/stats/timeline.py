"""Memory per node over time: the guest's ``node-sampler`` (``harness/guest/files/node-sampler.sh``)
samples every node's meminfo while a workload runs; this module plans its command lines and parses
what it printed (pure). The pytest plugin's ``stats.timeline(interval)`` runs it, and the HTML report
plots it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from harness.guest.protocol import NODE_SAMPLER

from .parse import StatsError

_SAMPLE = re.compile(r"^sample t=(?P<t>[\d.]+) node=(?P<node>\d+) total_kb=(?P<total>\d+) "
                     r"free_kb=(?P<free>\d+) used_kb=(?P<used>\d+)\s*$")
_STARTED = re.compile(r"^sampler pid=(\d+)\s*$", re.M)


@dataclass(frozen=True)
class Sample:
    """One node's memory at one moment (``t``: seconds since the guest booted)."""

    t: float
    node: int
    total_kb: int
    free_kb: int
    used_kb: int


@dataclass
class Timeline:
    """The samples of one sampler run, in order; filled when the ``stats.timeline`` block ends."""

    label: str = ""
    samples: list[Sample] = field(default_factory=list)

    def nodes(self) -> list[int]:
        """The nodes sampled, in id order."""
        return sorted({s.node for s in self.samples})

    def used_kb(self, node: int) -> list[tuple[float, int]]:
        """``(seconds since the first sample, used kB)`` of ``node``, in time order."""
        t0 = min((s.t for s in self.samples), default=0.0)
        return [(s.t - t0, s.used_kb) for s in sorted(self.samples, key=lambda s: s.t) if s.node == node]

    def change_kb(self, node: int) -> int:
        """``node``'s used memory at the last sample minus at the first (kB)."""
        series = self.used_kb(node)
        return series[-1][1] - series[0][1] if series else 0

    def peak_kb(self, node: int) -> int:
        """``node``'s highest used memory over the run (kB)."""
        return max((kb for _t, kb in self.used_kb(node)), default=0)

    def to_json(self) -> dict:
        return {"label": self.label, "samples": [s.__dict__ for s in self.samples]}


def start_command(interval: float, max_seconds: float, out: str) -> str:
    """Start the sampler in the background (it prints ``sampler pid=PID``)."""
    if not interval > 0:
        raise StatsError(f"a timeline's sampling interval must be positive, not {interval}")
    return shlex.join([NODE_SAMPLER, "start", f"{interval:g}", str(max(1, int(max_seconds))), out])


def stop_command(pid: int, out: str) -> str:
    """End the sampler ``pid`` and print its samples."""
    return shlex.join([NODE_SAMPLER, "stop", str(int(pid)), out])


def parse_started(text: str) -> int:
    """The sampler's pid from ``start``'s output."""
    m = _STARTED.search(text)
    if m is None:
        raise StatsError(f"the node sampler did not start: {text.strip()[-300:] or '(no output)'}")
    return int(m.group(1))


def parse_samples(text: str) -> list[Sample]:
    """Every ``sample`` line of the sampler's output (other lines are ignored)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m:
            out.append(Sample(float(m["t"]), int(m["node"]), int(m["total"]), int(m["free"]), int(m["used"])))
    return out
