"""Contract checks' pure logic: targets and verdicts on recorded stock output and on synthetic
dumps for each naming era of the private/managed-node series (mask present, absent, renamed,
complement, per-node features)."""

from __future__ import annotations

from dataclasses import replace
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
    assert (c.provisioned, c.zone) == ("memmap-kmem", "normal")


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


# --- skipped services, driver rebinding, hot-unplug ---------------------------------------

@pytest.mark.parametrize("features,promise,acted,outcome", [
    ("0x100", "services.mlock", 0, "pass"),          # mempolicy only: mlock leaves its pages alone
    ("0x100", "services.mlock", 1024, "fail"),       # ... and a kernel that mlocks them breaks the promise
    ("0x101", "services.mlock", 1024, "pass"),       # reclaim opted in: mlock acts
    ("0x101", "services.pageout", 0, "fail"),        # reclaim opted in, yet nothing was paged out
    ("0x120", "services.ksm", 1024, "pass"),         # ksm opted in
    ("0x100", "services.ksm", 3, "fail"),
    ("0x140", "services.compaction", 2048, "pass"),  # collapse -> compaction
    ("0x100", "services.compaction", 0, "pass"),
])
def test_service_acts_only_when_opted_in(features, promise, acted, outcome):
    p, _ = private_target(features={2: features})
    v = V.service(promise, p, 1024, acted, f"{acted} pages acted on")
    assert v.outcome == outcome, v.observed
    assert v.numbers == {"placed": 1024, "acted": acted}


def test_service_on_a_control_must_act_and_needs_pages_placed():
    p, c = private_target(features={2: "0x100"})
    assert V.service("services.reclaim", c, 1024, 1024, "all reclaimed").outcome == "pass"
    assert V.service("services.reclaim", c, 1024, 0, "none reclaimed").outcome == "fail"
    assert V.service("services.ksm", c, 0, 0, "mbind failed").outcome == "fail"     # a control always takes pages
    assert V.service("services.ksm", p, 0, 0, "mbind refused").outcome == "skip"
    assert V.service("services.ksm", private_target()[0], 1024, 0, "-").outcome == "skip"   # opt-ins unknown


def test_services_skipped_names_every_service_promise():
    p, _ = private_target(features={2: "0x0"})
    vs = V.services_skipped(p, "no mempolicy opt-in")
    assert [v.promise for v in vs] == list(V.SERVICE_PROMISES) and {v.outcome for v in vs} == {"skip"}
    assert [v.promise for v in V.services_skipped(p, "x", ("services.ksm",))] == ["services.ksm"]


def node_memory_out(name):
    return (DATA / "node-memory" / name).read_text()


def test_rebind_recorded_clean_busy_and_without_a_device():
    from harness.guest import node_memory as NM
    from harness.vm.problems import find_kernel_problems

    _, c = private_target(features={2: "0x0"})
    clean = NM.parse_rebind(node_memory_out("rebind-clean.out"))
    assert (clean.dax, clean.driver, clean.initial_bytes, len(clean.cycles)) == ("dax0.0", "kmem", 256 << 20, 3)
    assert V.rebind(c, clean, 3, []).outcome == "pass"
    assert V.rebind(c, clean, 4, []).outcome == "fail"                  # a cycle missing
    warn = find_kernel_problems("[ 9.1] WARNING: CPU: 1 PID: 300 at mm/memory_hotplug.c:1900 offline_pages+0x1\n"
                                "[ 9.1] Call Trace:\n")
    v = V.rebind(c, clean, 3, warn)
    assert v.outcome == "fail" and "warning: WARNING: CPU: 1" in v.observed
    busy = NM.parse_rebind(node_memory_out("rebind-busy.out"))
    v = V.rebind(replace(c, zone="movable"), busy, 3, [])
    assert v.outcome == "fail" and "offline Device or resource busy" in v.observed and v.numbers["clean"] == 0
    v = V.rebind(c, busy, 3, [])                  # ZONE_NORMAL control: the kernel's pages may pin it
    assert v.outcome == "skip" and "ZONE_NORMAL" in v.observed
    none = NM.parse_rebind(node_memory_out("rebind-none.out"))
    v = V.rebind(c, none, 3, [])
    assert v.outcome == "skip" and "no dax device with target_node 0" in v.observed


def test_hot_unplug_recorded():
    from harness.guest import node_memory as NM

    refused = NM.parse_offline(node_memory_out("offline-refused.out"))
    assert [b.result for b in refused.blocks] == ["ok", "error:Device_or_resource_busy"]
    assert refused.bytes_left == 128 << 20 and refused.describe().startswith("1 of 2 memory blocks offlined")
    p, c = private_target(features={2: "0x100"})        # mempolicy, no migration: offline must be refused
    assert V.hot_unplug(p, refused, 1024, 1024, True, 60, []).outcome == "pass"
    assert V.hot_unplug(replace(c, zone="movable"), refused, 1024, 1024, True, 60, []).outcome == "fail"
    assert V.hot_unplug(c, refused, 1024, 1024, True, 60, []).outcome == "skip"   # ZONE_NORMAL: EBUSY allowed
    done = NM.Offline(1, (NM.Block("memory9", "ok", 0.1), NM.Block("memory10", "ok", 0.1)), 0)
    assert V.hot_unplug(c, done, 1024, 0, True, 60, []).outcome == "pass"
    assert V.hot_unplug(c, done, 1024, 0, False, 60, []).outcome == "fail"        # the process died
    assert V.hot_unplug(p, done, 1024, 0, True, 60, []).outcome == "fail"         # migrated without the opt-in
    hung = NM.Offline(1, (NM.Block("memory9", "timeout", 60.0),), 128 << 20)
    v = V.hot_unplug(p, hung, 1024, 1024, True, 60, [])
    assert v.outcome == "fail" and "hung past 60 s" in v.observed
    assert V.hot_unplug(p, done, 0, 0, True, 60, []).outcome == "skip"


def test_node_memory_errors_and_swap():
    from harness.guest import node_memory as NM

    assert NM.parse_swap(node_memory_out("swap-on.out")) == NM.Swap(True, 64 << 20, "")
    assert NM.parse_swap("swap status=skipped reason=no zram module in this kernel\n").reason == \
        "no zram module in this kernel"
    with pytest.raises(NM.NodeMemoryError, match="no /sys/block/zram0"):
        NM.parse_swap("error msg=no /sys/block/zram0 after modprobe zram\n")
    with pytest.raises(NM.NodeMemoryError):
        NM.parse_offline("")
    assert NM.rebind(1, 3, 60, "movable").endswith("rebind 1 3 60 online_movable")


def test_movable_control_is_no_kernel_memory_control():
    s = from_dump(dump({**STOCK, "possible": "0-1", "online": "0-1", "has_memory": "0-1"}))
    (c,) = by_role(targets(s, load("memmap-kmem").topology), "control")
    c = replace(c, zone="movable")
    v = V.isolation("isolation.kernel", c, 0, "node 1 kernel memory +0 kB")
    assert v.outcome == "skip" and "ZONE_MOVABLE" in v.observed
    assert V.isolation("isolation.anon", c, 0, "0 pages").outcome == "xpass"      # user pages still must leak


# --- what the private-node series kernel (RFC v4 on 7.2.13) showed ---------------------------

def _series_targets():
    masks = {**STOCK, "has_memory": "0-1", "has_normal_memory": "0-1", "has_private_memory": "2"}
    s = from_dump(dump(masks))
    return targets(s, load("private-mempolicy").topology)


def test_madv_cold_is_judged_against_pages_that_are_born_inactive():
    # placing 1024 pages adds 1024 to Inactive(anon) with or without MADV_COLD (seen on 7.2 and 6.12):
    # the check cannot tell, on a private node or on a control
    (p,) = by_role(_series_targets(), "private")
    v = V.cold(p, 1024, 1024, 1024)
    assert v.outcome == "skip" and "no active page" in v.observed and v.numbers["acted"] == 0
    c = replace(p, role="control")
    assert V.cold(c, 1024, 1024, 1024).outcome == "skip"
    # MADV_COLD beyond the baseline is its own doing: the opt-in decides
    assert V.cold(p, 1024, 2048, 1024).outcome == "fail"          # reclaim not opted in: must leave them alone
    assert V.cold(c, 1024, 2048, 1024).outcome == "pass"
    assert V.cold(p, 0, 0, 0).outcome == "skip"                    # no page reached the node


def test_interleave_all_refused_is_a_failure_naming_mems_allowed():
    ts = targets(from_dump(dump({**STOCK, "has_memory": "0-1", "has_normal_memory": "0-1",
                                 "has_private_memory": "2"})), load("private-mempolicy").topology)
    (p,) = by_role(ts, "private")
    none = replace(p, opted_in=frozenset())
    v = V.interleave_refused(none, ["set_mempolicy: Invalid argument"], ["0-2"])
    assert v.outcome == "fail" and v.promise == "isolation.interleave"
    assert "refused for every process: set_mempolicy: Invalid argument" in v.observed and "0-2" in v.observed
