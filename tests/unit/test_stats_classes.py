"""Node classes from node masks: the recorded stock kernel, and synthetic dumps for each naming era
of the private/managed-node series (a mask present, absent, renamed, unknown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.stats import classify_masks, from_dump
from harness.stats.classes import decode_features, mask_meaning, table, upstream_masks
from harness.units import IdList

DATA = Path(__file__).parent / "data" / "stats"
N = "/sys/devices/system/node"


def synthetic(masks: dict[str, str], nodes: dict[int, tuple[str, int]], features: dict[int, str] | None = None) -> str:
    """A snapshot dump in the script's format: masks by name, nodes as (cpulist, MemTotal kB)."""
    lines = ["@@ snapshot 1", "@@ refresh 0", "@@ files"]
    lines += [f"{N}/{name}:{value}" for name, value in masks.items()]
    for nid, (cpus, kb) in nodes.items():
        lines.append(f"{N}/node{nid}/cpulist:{cpus}")
        lines.append(f"{N}/node{nid}/meminfo:Node {nid} MemTotal:  {kb} kB")
    for nid, hexval in (features or {}).items():
        lines.append(f"{N}/node{nid}/mem_features:{hexval}")
    lines.append("@@ end")
    return "\n".join(lines) + "\n"


STOCK = {"possible": "0-2", "online": "0-2", "has_cpu": "0", "has_memory": "0-2", "has_normal_memory": "0-2"}
NODES = {0: ("0-1", 1048576), 1: ("", 524288), 2: ("", 524288)}


def test_recorded_stock_kernel():
    s = from_dump((DATA / "tiered-3.txt").read_text())
    c = s.classes
    assert c.names(0) == ["cpu", "memory", "normal", "public", "user"]
    assert c.names(1) == ["memory", "normal", "memory-only", "public", "user"]
    assert c.nodes("memory-only") == IdList([1, 2])
    assert c.nodes("private") == IdList() and c.nodes("generic-initiator") == IdList()
    assert c.unknown_masks == ()
    public = next(k for k in c.of(1) if k.name == "public")
    assert public.source.startswith("implied")         # stock has no private-node masks


def test_table_has_every_known_mask_and_a_meaning():
    masks = table()["masks"]
    for name in ("has_cpu", "has_memory", "has_normal_memory", "has_high_memory", "has_generic_initiator",
                 "has_private_memory", "has_public_memory", "has_common_memory", "has_user_memory",
                 "has_managed_memory"):
        assert name in masks and masks[name]["meaning"]
    assert "unknown" in mask_meaning("has_nonsense_memory")


def test_era_has_private_memory():
    """Early RFC: an explicit private mask."""
    s = from_dump(synthetic({**STOCK, "has_private_memory": "2", "has_user_memory": "0-1"}, NODES))
    c = s.classes
    assert c.nodes("private") == IdList([2])
    assert c.nodes("public") == IdList([0, 1])         # implied for memory nodes that are not private
    assert next(k for k in c.of(0) if k.name == "public").source.startswith("implied")
    assert c.nodes("user") == IdList([0, 1])           # from the mask, not implied
    assert next(k for k in c.of(0) if k.name == "user").source == "has_user_memory"


def test_era_has_public_memory():
    """A public mask: memory nodes outside it are private."""
    s = from_dump(synthetic({**STOCK, "has_public_memory": "0-1", "has_user_memory": "0-2"}, NODES))
    c = s.classes
    assert c.nodes("private") == IdList([2])
    assert next(k for k in c.of(2) if k.name == "private").source == "not in has_public_memory"
    assert c.nodes("public") == IdList([0, 1])
    assert c.has(2, "user")


def test_era_has_common_memory_newest():
    """Newest: private = in has_memory and not in has_common_memory."""
    s = from_dump(synthetic({**STOCK, "has_common_memory": "0"}, NODES))
    c = s.classes
    assert c.nodes("private") == IdList([1, 2]) and c.nodes("public") == IdList([0])
    # no user mask: user-placeable is implied only for non-private memory nodes
    assert c.nodes("user") == IdList([0])


def test_era_private_node_absent_from_has_memory():
    """v4: a private node not opted into mempolicy is missing from has_memory; its MemTotal says it
    has memory, so the complement of the public mask still finds it."""
    masks = {**STOCK, "has_memory": "0-1", "has_normal_memory": "0-1", "has_public_memory": "0-1"}
    c = from_dump(synthetic(masks, NODES)).classes
    assert c.has(2, "private") and not c.has(2, "memory") and c.has(2, "memory-only")


def test_era_renamed_managed():
    """After LSF/MM 2026 the class is 'managed': the renamed mask gives the same class."""
    c = from_dump(synthetic({**STOCK, "has_managed_memory": "1"}, NODES)).classes
    assert c.nodes("private") == IdList([1])
    assert next(k for k in c.of(1) if k.name == "private").source == "has_managed_memory"


def test_unknown_mask_is_kept_and_shown():
    s = from_dump(synthetic({**STOCK, "has_shiny_memory": "1-2"}, NODES))
    assert s.masks["has_shiny_memory"] == IdList([1, 2])
    assert s.classes.unknown_masks == ("has_shiny_memory",)
    assert "unknown:has_shiny_memory" in s.classes.names(1)
    assert s.to_json()["unknown_masks"] == ["has_shiny_memory"]


def test_generic_initiator_and_empty_masks():
    c = classify_masks({"has_cpu": IdList([0]), "has_memory": IdList([0]), "has_generic_initiator": IdList([1])},
                       [0, 1])
    assert c.names(1) == ["generic-initiator"]          # no memory, no CPUs: only what the mask says
    assert c.names(0) == ["cpu", "memory", "public", "user"]


@pytest.mark.parametrize("masks,value,layout,names", [
    ({"has_public_memory"}, 0x183, "feat-public", ("reclaim", "demotion", "user_numa", "public")),
    ({"has_private_memory"}, 0x186, "cap", ("demotion", "numa_balancing", "hugetlb", "user_numa")),
    (set(), 0x5, None, ("bit0", "bit2")),
])
def test_mem_features_layouts(masks, value, layout, names):
    got = decode_features(value, {m: IdList() for m in masks})
    assert got == (layout, names)


def test_mem_features_read_per_node():
    s = from_dump(synthetic({**STOCK, "has_public_memory": "0-1"}, NODES, features={2: "0x3"}))
    assert s.node(2).mem_features == 3
    assert s.classes.features == {2: ("reclaim", "demotion")} and s.classes.layout == "feat-public"


def test_a_stock_kernel_exports_only_the_masks_the_table_calls_upstream():
    for name in ("memory-only.txt", "tiered-3.txt", "cxl-single.txt"):
        s = from_dump((DATA / name).read_text())
        assert set(s.masks) <= upstream_masks(), name
    assert not {"has_private_memory", "has_public_memory", "has_common_memory", "has_user_memory",
                "has_managed_memory"} & upstream_masks()
