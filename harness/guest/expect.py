"""Compare a topology's ``expect`` block with what the guest kernel reports.

Pure: (Expect, the guest's statistics snapshot) -> a list of mismatches, each a sentence naming
the node and both values. Empty means the guest matches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.topology.model import Expect
from harness.units import format_size

if TYPE_CHECKING:
    from harness.stats import Snapshot


def _mib(n: int) -> str:
    return format_size(n - n % (1 << 20)) if n >= 1 << 20 else f"{n} bytes"


def mismatches(e: Expect, g: Snapshot) -> list[str]:
    out: list[str] = []
    with_memory = tuple(g.with_memory)
    if e.nodes is not None and len(with_memory) != e.nodes:
        out.append(f"expected {e.nodes} nodes with memory, guest has {len(with_memory)} ({','.join(map(str, with_memory)) or 'none'})")
    for nid, ne in sorted(e.node.items()):
        got = g.nodes.get(nid)
        if got is None:
            out.append(f"node {nid}: expected, but the guest has no such node")
            continue
        if ne.cpus is not None and tuple(got.cpus) != tuple(ne.cpus):
            out.append(f"node {nid}: expected CPUs {ne.cpus or 'none'}, guest has {got.cpus or 'none'}")
        if ne.memory is not None:
            low = ne.memory * (100 - e.memory_tolerance) // 100
            if not low <= got.mem_total <= ne.memory:
                out.append(f"node {nid}: expected MemTotal {format_size(ne.memory)} (-{e.memory_tolerance}%), "
                           f"guest has {_mib(got.mem_total)}")
    if e.tiers is not None:
        # Only the nodes the expectation names are compared: tiers of other nodes are not its business.
        named = {n for grp in e.tiers for n in grp}
        got_groups = [tuple(n for n in grp if n in named) for grp in g.tier_groups()]
        got_groups = [grp for grp in got_groups if grp]
        want = [tuple(grp) for grp in e.tiers]
        if got_groups != want:
            def show(gs):
                return " > ".join("{" + ",".join(map(str, grp)) + "}" for grp in gs) or "none"
            out.append(f"expected memory tiers {show(want)} (fastest first), guest has {show(got_groups)}")
    return out
