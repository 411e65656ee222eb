"""Node classes discovered from the guest's node masks, driven by the table ``node_masks.yaml``.

The private/managed-node series renames its masks between versions, so nothing here names a
mask: the table says which class each mask name gives (and, for "public"/"common" masks, which
class a memory node outside it has). A mask the table does not know is kept as an unknown class.
Classes: ``cpu``, ``memory``, ``memory-only`` (memory, no CPUs), ``normal``, ``highmem``,
``private``, ``public``, ``user`` (mempolicy may target it), ``generic-initiator``, and
``unknown:<mask>``. Each class says where it came from (a mask, a mask's complement, or what a
kernel without such masks implies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import yaml

from harness.resources import node_masks_file
from harness.units import IdList

if TYPE_CHECKING:
    from .model import Snapshot

NOT_CLASSES = ("possible", "online")   # every node the guest lists is in these


@dataclass(frozen=True)
class NodeClass:
    name: str
    source: str      # "has_cpu", "not in has_common_memory", "implied: ...", "memory without CPUs"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class NodeClasses:
    per_node: dict[int, tuple[NodeClass, ...]]
    unknown_masks: tuple[str, ...] = ()
    features: dict[int, tuple[str, ...]] = field(default_factory=dict)   # decoded nodeN/mem_features
    layout: str | None = None                                             # mem_features layout used

    def of(self, nid: int) -> tuple[NodeClass, ...]:
        return self.per_node.get(nid, ())

    def has(self, nid: int, name: str) -> bool:
        return any(c.name == name for c in self.of(nid))

    def nodes(self, name: str) -> IdList:
        return IdList(n for n, cs in sorted(self.per_node.items()) if any(c.name == name for c in cs))

    def names(self, nid: int) -> list[str]:
        return [c.name for c in self.of(nid)]


@cache
def table() -> dict[str, Any]:
    """The parsed ``node_masks.yaml``."""
    with open(node_masks_file()) as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def upstream_masks() -> frozenset[str]:
    """The mask names an upstream kernel exports (``series: upstream`` in the table); any other mask a
    guest has comes from a patch series such as the private/managed-node one."""
    return frozenset(n for n, e in table()["masks"].items() if e["series"] == "upstream")


def mask_meaning(name: str) -> str:
    entry = table()["masks"].get(name)
    return entry["meaning"] if entry else "unknown to this harness (kept as reported)"


def decode_features(value: int, masks: dict[str, IdList]) -> tuple[str | None, tuple[str, ...]]:
    """``(layout, bit names)`` of a ``mem_features`` value; unknown bits as ``bitN``."""
    layout = next((lay for lay in table().get("mem_features", []) if lay["when"] in masks), None)
    bits = layout["bits"] if layout else {}
    names = tuple(bits.get(i, f"bit{i}") for i in range(value.bit_length()) if value >> i & 1)
    return (layout["layout"] if layout else None), names


def classify_masks(masks: dict[str, IdList], nodes: list[int], *, mem_total: dict[int, int] | None = None,
                   cpus: dict[int, IdList] | None = None, mem_features: dict[int, int | None] | None = None
                   ) -> NodeClasses:
    """Classify ``nodes`` from the masks the guest exports (name -> node list).

    A node counts as having memory if it is in ``has_memory`` or reports a non-zero MemTotal
    (one series version lists a private node in ``has_memory`` only if it opted into mempolicy).
    """
    known = table()["masks"]
    implied = table().get("implied", {})
    mem_total = mem_total or {}
    cpus = cpus or {}
    with_memory = {n for n in nodes if n in masks.get("has_memory", IdList()) or mem_total.get(n, 0) > 0}
    with_cpu = {n for n in nodes if n in masks.get("has_cpu", IdList()) or cpus.get(n)}
    per: dict[int, list[NodeClass]] = {n: [] for n in nodes}

    def add(n: int, name: str, source: str) -> None:
        if n in per and not any(c.name == name for c in per[n]):
            per[n].append(NodeClass(name, source))

    present_classes: set[str] = set()
    unknown: list[str] = []
    for mask, ids in masks.items():
        entry = known.get(mask)
        if entry is None:
            if mask.startswith("has_"):
                unknown.append(mask)
                for n in ids:
                    add(n, f"unknown:{mask}", mask)
            continue
        if entry["class"] in NOT_CLASSES:
            continue
        present_classes.add(entry["class"])
        for n in ids:
            add(n, entry["class"], mask)
        if "complement" in entry:
            present_classes.add(entry["complement"])
            for n in sorted(with_memory - set(ids)):
                add(n, entry["complement"], f"not in {mask}")
    for n in sorted(with_memory - with_cpu):
        add(n, "memory-only", "memory without CPUs")
    private = {n for n in nodes if any(c.name == "private" for c in per[n])}
    for cls, why in implied.items():
        if cls not in present_classes:
            for n in sorted(with_memory - private):
                add(n, cls, f"implied: {why}")
    layout = None
    feats: dict[int, tuple[str, ...]] = {}
    for n, value in (mem_features or {}).items():
        if value is not None:
            layout, feats[n] = decode_features(value, masks)
    return NodeClasses(per_node={n: tuple(cs) for n, cs in per.items()}, unknown_masks=tuple(unknown),
                       features=feats, layout=layout)


def classify(s: Snapshot) -> NodeClasses:
    return classify_masks(s.masks, sorted(s.nodes), mem_total={n: v.mem_total for n, v in s.nodes.items()},
                          cpus={n: v.cpus for n, v in s.nodes.items()},
                          mem_features={n: v.mem_features for n, v in s.nodes.items()})
