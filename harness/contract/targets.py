"""Which nodes the contract checks run against, and what each is expected to allow (pure).

A **private** target is a node the guest's node masks class ``private`` (whatever the series
calls the mask this version). Its opt-ins come, in order, from the kernel (``nodeN/mem_features``
decoded by the node-mask table, and the ``user`` class: mempolicy may target it), else from what
the topology provisioned (``guest.provision[].features``), else none are known.

A **control** target is an ordinary node a private node is compared with: a memory-only node, or a
node the topology provisioned on a kernel that made it ordinary (stock kmem). Every service applies
to it, so the opt-in side of each promise must hold there, and every isolation promise must FAIL
there: that is what proves a check can fail.

When no node is private, one placeholder private target carries :func:`no_private_reason` so every
private-only check skips with a reason that names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.stats import Snapshot
from harness.stats.classes import table, upstream_masks
from harness.topology.model import SERVICES, Topology
from harness.topology.provision import effective_features

Role = Literal["private", "control"]

#: ``mem_features`` bit names (node_masks.yaml) -> the services the contract knows.
FEATURE_SERVICES = {"reclaim": "reclaim", "demotion": "demotion", "numa_balancing": "numa_balancing",
                    "ltpin": "longterm_pin", "ksm": "ksm", "hugetlb": "hugetlb", "user_numa": "mempolicy",
                    "collapse": "compaction"}


@dataclass(frozen=True)
class Target:
    """One node under contract, or (``node`` None) the private node the kernel did not show."""

    node: int | None
    role: Role
    provisioned: str                       # how it came to be: "memory-only (SRAT)", "memmap-kmem", ...
    opted_in: frozenset[str] | None        # services; None: the kernel says nothing and nothing was provisioned
    source: str = ""                       # where opted_in came from
    missing: str = ""                      # for the placeholder: why there is no private node
    zone: str = "normal"                   # movable: the topology onlined it ZONE_MOVABLE (kernel memory cannot land)

    @property
    def label(self) -> str:
        return f"node {self.node} ({self.role}, {self.provisioned})" if self.node is not None else \
            "private/managed node (none)"

    def allows(self, service: str) -> bool | None:
        """Whether ``service`` applies to the node: True for a control, None when unknown."""
        if self.role == "control":
            return True
        if self.opted_in is None:
            return None
        return service in self.opted_in


def private_mask_names() -> list[str]:
    """Every mask name the node-mask table knows that can mark a node private (directly or as the
    complement of a public/common mask)."""
    masks = table()["masks"]
    return [n for n, e in masks.items() if e["class"] == "private" or e.get("complement") == "private"]


def no_private_reason(s: Snapshot) -> str:
    """Why no node is private/managed, naming the masks looked for and what the guest has."""
    have = sorted(m for m in s.masks if m.startswith("has_"))
    stock = not (set(have) - upstream_masks())
    return (f"no node is private/managed: the kernel exposes none of {', '.join(private_mask_names())}"
            + (" (stock kernel)" if stock else f" (it has {', '.join(have)})"))


def _provisioned(t: Topology | None, nid: int) -> tuple[str, list[str] | None, str]:
    """(how the node came to be, the features it was provisioned with, its zone)."""
    if t is not None:
        for p in t.guest.provision:
            if p.node == nid:
                if p.via == "private-module":   # the module onlines ZONE_MOVABLE (MMOP_ONLINE_MOVABLE)
                    how = "private-module, " + ("CRAM" if p.cram else "ops " + ("|".join(p.features) or "none"))
                    return how, effective_features(p), "movable"
                zone = p.zone if p.via == "memmap-kmem" else "normal"
                return p.via + (" (ZONE_MOVABLE)" if zone == "movable" else ""), list(p.features), zone
        for pn in t.guest.private_nodes:
            if pn.node == nid:
                return "private_node=" + ("" if pn.features is None else f"{pn.features:#x}"), None, "normal"
    return "memory-only (SRAT)", None, "normal"


def targets(s: Snapshot, t: Topology | None = None) -> list[Target]:
    """The contract's targets in this guest: private nodes (or the placeholder), then controls."""
    c = s.classes
    out: list[Target] = []
    private = list(c.nodes("private"))
    for nid in private:
        how, provisioned, zone = _provisioned(t, nid)
        if nid in c.features:
            opted = frozenset(FEATURE_SERVICES[f] for f in c.features[nid] if f in FEATURE_SERVICES)
            source = f"nodeN/mem_features ({c.layout or 'unknown layout'})"
        elif provisioned or (provisioned is not None and how.startswith("private-module")):
            opted, source = frozenset(provisioned), "the topology's provision features"
        else:
            opted, source = None, "unknown: the kernel exports no per-node features"
        user = [k for k in c.of(nid) if k.name == "user" and not k.source.startswith("implied")]
        if user:   # a user-memory mask lists it: mempolicy may target it
            opted, source = (opted or frozenset()) | {"mempolicy"}, source + f"; {user[0].source}"
        out.append(Target(nid, "private", how, opted, source, zone=zone))
    if not private:
        out.append(Target(None, "private", "-", None, missing=no_private_reason(s)))
    for nid in c.nodes("memory"):
        if nid in private or c.has(nid, "cpu") or not c.has(nid, "memory-only"):
            continue
        how, _, zone = _provisioned(t, nid)
        out.append(Target(nid, "control", how, frozenset(SERVICES), "an ordinary node: every service applies",
                          zone=zone))
    return out
