"""Contract checks' pure logic: targets and verdicts on recorded stock output and on synthetic
dumps for each naming era of the private/managed-node series (mask present, absent, renamed,
complement, per-node features)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.contract import PROMISES, no_private_reason, targets
from harness.contract import verdicts as V
from harness.contract.run import expected_private
from harness.guest.workloads import Refusal
from harness.stats import from_dump
from harness.stats.parse import demotion_targets
from harness.topology import load

DATA = Path(__file__).parent / "data"
N = "/sys/devices/system/node"
STOCK = {"possible": "0-2", "online": "0-2", "has_cpu": "0", "has_memory": "0-2", "has_normal_memory": "0-2"}
NODES = {0: ("0-1", 1048576), 1: ("", 524288), 2: ("", 524288)}


def dump(masks: dict[str, str], features: dict[int, str] | None = None) -> str:
    lines = ["@@ snapshot 1", "@@ refresh 0", "@@ files"]
    lines += [f"{N}/{name}:{value}" for name, value in masks.items()]
    for nid, (cpus, kb) in NODES.items():
        lines += [f"{N}/node{nid}/cpulist:{cpus}", f"{N}/node{nid}/meminfo:Node {nid} MemTotal:  {kb} kB"]
    lines += [f"{N}/node{nid}/mem_features:{v}" for nid, v in (features or {}).items()]
    return "\n".join([*lines, "@@ end"]) + "\n"


def by_role(ts, role):
    return [t for t in ts if t.role == role]


# --- targets per era ----------------------------------------------------------------------

def test_stock_recorded_has_no_private_node_and_one_control():
    s = from_dump((DATA / "stats" / "memory-only.txt").read_text())
    ts = targets(s, load("memory-only").topology)
    (p,) = by_role(ts, "private")
    assert p.node is None and p.missing.endswith("(stock kernel)")
    for name in ("has_private_memory", "has_managed_memory", "has_public_memory", "has_common_memory"):
        assert name in p.missing
    (c,) = by_role(ts, "control")
    assert (c.node, c.provisioned, c.allows("mempolicy")) == (1, "memory-only (SRAT)", True)
    assert all(v.outcome == "skip" and v.observed == p.missing for v in V.placeholder(p))
    assert [v.promise for v in V.placeholder(p)] == list(PROMISES)


def test_memmap_kmem_node_is_a_control_named_by_its_path():
    s = from_dump(dump({**STOCK, "possible": "0-1", "online": "0-1", "has_memory": "0-1"}))
    (c,) = by_role(targets(s, load("memmap-kmem").topology), "control")
    assert c.provisioned == "memmap-kmem"


@pytest.mark.parametrize("masks,private,source", [
    ({"has_private_memory": "2"}, [2], "has_private_memory"),                        # early RFC
    ({"has_managed_memory": "2"}, [2], "has_managed_memory"),                        # renamed after LSF/MM
    ({"has_public_memory": "0-1"}, [2], "not in has_public_memory"),                 # public mask
    ({"has_common_memory": "0"}, [1, 2], "not in has_common_memory"),                # newest: complement
])
def test_private_nodes_found_in_every_era(masks, private, source):
    s = from_dump(dump({**STOCK, **masks}))
    ts = targets(s)
    assert [t.node for t in by_role(ts, "private")] == private
    assert all(t.node not in private for t in by_role(ts, "control"))
    v = V.in_mask(by_role(ts, "private")[0], [private[0]], source)
    assert v.outcome == "pass" and source in v.observed


def test_unknown_masks_only_are_named_in_the_reason():
    s = from_dump(dump({**STOCK, "has_shiny_memory": "2"}))
    reason = no_private_reason(s)
    assert "has_shiny_memory" in reason and "stock kernel" not in reason


def test_opt_ins_from_kernel_features_then_user_mask_then_unknown():
    # cap layout (has_private_memory): 0x186 = demotion, numa_balancing, hugetlb, user_numa
    s = from_dump(dump({**STOCK, "has_private_memory": "2"}, features={2: "0x186"}))
    (t,) = by_role(targets(s), "private")
    assert t.opted_in == {"demotion", "numa_balancing", "hugetlb", "mempolicy"}
    assert t.allows("migration") is False and "mem_features" in t.source
    s = from_dump(dump({**STOCK, "has_private_memory": "2", "has_user_memory": "0-2"}))
    (t,) = by_role(targets(s), "private")
    assert t.opted_in == {"mempolicy"}
    (t,) = by_role(targets(from_dump(dump({**STOCK, "has_private_memory": "2"}))), "private")
    assert t.opted_in is None and t.allows("mempolicy") is None


def test_opt_ins_from_the_provisioned_topology():
    s = from_dump(dump({**STOCK, "has_private_memory": "1"}))
    topo = load("memmap-kmem").topology
    from dataclasses import replace

    from harness.topology.model import Provision
    t2 = replace(topo, requires=["private-nodes"],
                 guest=replace(topo.guest, provision=[Provision(node=1, via="dax_test", features=["migration"])]))
    (t,) = by_role(targets(s, t2), "private")
    assert (t.provisioned, t.opted_in) == ("dax_test", {"migration"})
    assert expected_private(t2) == [1] and expected_private(topo) == []


# --- verdicts -----------------------------------------------------------------------------

def private_target(features=None, masks=None):
    s = from_dump(dump({**STOCK, "has_private_memory": "2", **(masks or {})}, features=features))
    return by_role(targets(s), "private")[0], by_role(targets(s), "control")[0]


@pytest.mark.parametrize("role,leaked,outcome", [
    ("private", 0, "pass"), ("private", 12, "fail"), ("control", 31000, "xfail"), ("control", 0, "xpass")])
def test_isolation_outcomes(role, leaked, outcome):
    p, c = private_target(features={2: "0x0"})
    v = V.isolation("isolation.anon", p if role == "private" else c, leaked, f"{leaked} pages")
    assert v.outcome == outcome and v.numbers["leaked"] == leaked
    if outcome == "xfail":
        assert "negative control leaked: 31000 pages" == v.observed


def test_isolation_promise_lifted_by_the_opt_in():
    p, _ = private_target(features={2: "0x100"})       # user_numa -> mempolicy
    assert V.isolation("isolation.interleave", p, 2048, "2048 pages").outcome == "skip"
    assert V.isolation("isolation.anon", p, 2048, "2048 pages").outcome == "fail"


@pytest.mark.parametrize("features,refusal,landed,outcome", [
    ("0x0", Refusal("mbind", 22, "EINVAL"), 0, "pass"),      # not opted in: refused
    ("0x0", None, 1024, "fail"),                              # not opted in, but pages landed
    ("0x0", Refusal("mbind", 12, "ENOMEM"), 0, "fail"),       # refused for the wrong reason
    ("0x100", None, 1024, "pass"),                            # opted in: pages land
    ("0x100", Refusal("mbind", 22, "EINVAL"), 0, "fail"),
    (None, None, 1024, "skip"),                               # the kernel says nothing
])
def test_mbind(features, refusal, landed, outcome):
    p, _ = private_target(features={2: features} if features else None)
    v = V.mbind(p, refusal, landed, 1024)
    assert v.outcome == outcome, v.observed


def test_move_pages_wants_enodev_and_control_wants_pages():
    p, c = private_target(features={2: "0x0"})
    assert V.move_pages(p, Refusal("move_pages", 19, "ENODEV"), 0, 1024).outcome == "pass"
    assert V.move_pages(p, Refusal("move_pages", 22, "EINVAL"), 0, 1024).outcome == "fail"
    assert V.move_pages(c, None, 1024, 1024).outcome == "pass"
    assert V.move_pages(c, Refusal("move_pages", 19, "ENODEV"), 0, 1024).outcome == "fail"
    assert V.migrate_pages(p, Refusal("migrate_pages", 22, "EINVAL"), 0, 1024).outcome == "pass"


def test_fallback_orders_recorded_after_kmem_hot_add():
    orders = V.fallback_orders((DATA / "contract" / "dmesg-memmap-kmem.txt").read_text())
    assert orders == {0: [0, 1], 1: [1, 0]}          # the last lines win: rebuilt after hot-add
    p, c = private_target(features={2: "0x0"})
    v = V.fallback(c, {0: [0, 1], 1: [1, 0]})
    assert v.outcome == "xfail" and "node 0's order is 0 1" in v.observed
    assert V.fallback(p, {0: [0, 1], 1: [1, 0], 2: [2, 0]}).outcome == "pass"
    assert V.fallback(p, {0: [0, 2, 1]}).outcome == "fail"
    assert V.fallback(p, {}).outcome == "skip"


def test_kthreads_recorded_and_opt_ins():
    found = V.kthreads((DATA / "contract" / "ps-memory-only.txt").read_text())
    assert found == {"kswapd": {0, 1}, "kcompactd": {0, 1}}
    p, c = private_target(features={2: "0x1"})            # reclaim only
    assert V.node_kthreads(c, found).outcome == "pass"
    assert V.node_kthreads(p, {"kswapd": {0, 2}, "kcompactd": {0}}).outcome == "pass"
    assert V.node_kthreads(p, {"kswapd": {0, 2}, "kcompactd": {0, 2}}).outcome == "fail"
    assert V.node_kthreads(private_target()[0], found).outcome == "skip"


def test_demotion_targets_recorded():
    d = demotion_targets((DATA / "contract" / "dmesg-memmap-kmem.txt").read_text().splitlines())
    p, c = private_target(features={2: "0x0"})
    assert V.demotion(c, d).outcome == "pass"
    assert V.demotion(p, d).outcome == "pass"             # node 2 receives nothing, not opted in
    p2, _ = private_target(features={2: "0x2"})           # demotion opted in, but no node demotes to 2
    assert V.demotion(p2, d).outcome == "fail"
