"""The fallback leak: with no memory policy, pressure on the CPU's node spills onto a
memory-only node. Stock kernel, ``memory-only`` preset.

This is the negative control of every isolation check (private/managed nodes exist to
stop exactly this): on the stock kernel the leak is real and measurable, so a check
that claims "no pages leaked" is shown here to be able to fail.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.topology("memory-only")

MIB = 256


def test_pressure_on_node_0_without_a_policy_leaks_onto_the_memory_only_node(guest, stats, record_property):
    """Allocate node 0's free memory plus 200 MiB, no policy: the allocator falls back to
    node 1 (at node 0's low watermark) before any reclaim. Node 1 counts each such page as
    a miss and node 0 as foreign, and the two match. Control: the bind test puts a smaller
    allocation wholly on its node, and 'place' with no policy keeps 16 MiB on node 0."""
    free0 = stats.before.node(0).mem_free // (1 << 20)
    with stats.timeline(0.5, label=f"pressure to {free0 + 200} MiB, no policy") as tl:  # plotted in the HTML report
        r = guest.pressure("machine", f"total:{free0 + 200}", step_mib=16)
    d = stats.delta()
    # the memory-only node filled while the pressure ran (its peak, sampled in the guest)
    assert tl.peak_kb(1) - tl.used_kb(1)[0][1] >= 64 * 1024, tl.used_kb(1)
    leaked = d.node(1).numa_miss
    record_property("measured_fallback_leak_pages", leaked)
    record_property("measured_node0_foreign_pages", d.node(0).numa_foreign)
    assert not r.cut_short, r.reason
    assert leaked >= 150 * MIB, f"only {leaked} pages fell back to node 1"
    assert d.node(0).numa_foreign == pytest.approx(leaked, rel=0.02)
