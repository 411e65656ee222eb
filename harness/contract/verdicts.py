"""Pure verdicts: what the guest reported -> pass / fail / skip / expected failure, with the numbers.

Every function here takes parsed guest output (numbers, refusals, boot-log lines) and a
:class:`~harness.contract.targets.Target`; none runs anything. Outcomes:

* ``pass`` / ``fail``: a private node kept (or broke) the promise; a control node showed the
  opted-in behaviour every ordinary node has (or did not);
* ``xfail``: a negative control leaked, as an ordinary node must: the check can fail;
* ``xpass``: a negative control did NOT leak: the check could not have caught a leak here, which
  is a failure of the check;
* ``skip``: the kernel shows nothing to check, with the reason naming what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.guest.node_memory import Offline, Rebind
from harness.guest.workloads import Refusal
from harness.stats.parse import DemotionTarget
from harness.vm.problems import Problem

from .targets import Target

Outcome = Literal["pass", "fail", "skip", "xfail", "xpass"]
Kind = Literal["private-only", "isolation", "opt-in", "lifecycle"]


@dataclass(frozen=True)
class Promise:
    id: str
    kind: Kind
    text: str
    service: str | None = None    # the opt-in that lifts the promise


PROMISES: dict[str, Promise] = {p.id: p for p in (
    Promise("discovery.mask", "private-only", "the node is in its private/managed mask"),
    Promise("discovery.fallback", "isolation", "absent from the other nodes' fallback order (boot log)"),
    Promise("discovery.kthreads", "opt-in", "no kswapd/kcompactd for the node unless reclaim/compaction opted in"),
    Promise("isolation.anon", "isolation", "an anonymous hog on the normal nodes puts no page on it"),
    Promise("isolation.kernel", "isolation", "kernel memory (slab, page tables, stacks) does not grow on it"),
    Promise("isolation.pagecache", "isolation", "page cache written under pressure puts no page on it"),
    Promise("isolation.interleave", "isolation", "numactl --interleave=all does not spill onto it", "mempolicy"),
    Promise("isolation.hugetlb", "isolation", "a hugetlb reservation on it is refused", "hugetlb"),
    Promise("mempolicy.mbind", "opt-in", "mbind to it: EINVAL unless opted in, pages land when opted in", "mempolicy"),
    Promise("migration.move_pages", "opt-in", "move_pages to it: ENODEV unless opted in, per-page status when opted in",
            "migration"),
    Promise("migration.migrate_pages", "opt-in", "migrate_pages to it: refused unless opted in, pages move when opted in",
            "migration"),
    Promise("demotion.target", "opt-in", "a demotion target only when demotion opted in", "demotion"),
    # skipped services: each acts on pages already on the node (placed there by mbind) only if opted in.
    # mlock and MADV_COLD work on the LRU lists, which a node outside reclaim keeps its pages off.
    Promise("services.mlock", "opt-in", "mlock of pages on it: they join its unevictable list (Mlocked) only when "
            "reclaim opted in", "reclaim"),
    Promise("services.cold", "opt-in", "MADV_COLD on pages on it: they are deactivated only when reclaim opted in",
            "reclaim"),
    Promise("services.pageout", "opt-in", "MADV_PAGEOUT on pages on it: they are swapped out only when reclaim "
            "opted in", "reclaim"),
    Promise("services.reclaim", "opt-in", "memory.reclaim of a cgroup holding pages on it takes them only when "
            "reclaim opted in", "reclaim"),
    Promise("services.ksm", "opt-in", "KSM merges identical pages on it only when KSM opted in", "ksm"),
    Promise("services.compaction", "opt-in", "compacting the node scans its pages only when compaction opted in",
            "compaction"),
    Promise("driver.rebind", "lifecycle", "its driver unbinds (memory gone) and rebinds (memory back) three times "
            "without a kernel warning"),
    Promise("hotplug.offline", "lifecycle", "offlining its memory with pages in use ends within the time limit: "
            "pages migrate out when migration opted in, else it is refused; no kernel warning", "migration"),
)}

#: The skipped-services promises, in order.
SERVICE_PROMISES = tuple(p for p in PROMISES if p.startswith("services."))


@dataclass(frozen=True)
class Verdict:
    promise: str
    target: str                   # the target's label
    node: int | None
    role: str
    capability: str               # what the node is provisioned / opted into, as this check sees it
    outcome: Outcome
    observed: str                 # one line with the numbers
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"promise": self.promise, "text": PROMISES[self.promise].text, "target": self.target, "node": self.node,
                "role": self.role, "capability": self.capability, "outcome": self.outcome, "observed": self.observed,
                "numbers": self.numbers}


def _capability(t: Target, service: str | None) -> str:
    if t.node is None:
        return "none detected"
    if t.role == "control":
        return f"{t.provisioned}: ordinary node"
    if service is None:
        return f"{t.provisioned}: private"
    allowed = t.allows(service)
    state = {True: "opted in", False: "not opted in", None: "opt-in unknown"}[allowed]
    return f"{t.provisioned}: {service} {state}"


def verdict(promise: str, t: Target, outcome: Outcome, observed: str, **numbers: Any) -> Verdict:
    return Verdict(promise, t.label, t.node, t.role, _capability(t, PROMISES[promise].service), outcome, observed,
                   numbers)


def placeholder(t: Target) -> list[Verdict]:
    """Every promise skipped for the private node the kernel did not show."""
    return [verdict(p, t, "skip", t.missing) for p in PROMISES]


# --- isolation: a private node must stay empty, a control must leak ----------------------

def isolation(promise: str, t: Target, leaked: int, what: str, **numbers: Any) -> Verdict:
    """``leaked``: how much (pages, bytes) landed on the node; ``what`` says it with its unit."""
    p = PROMISES[promise]
    if t.role == "private" and p.service and t.allows(p.service):
        return verdict(promise, t, "skip", f"the node opted into {p.service}: the promise does not apply ({what})",
                       leaked=leaked, **numbers)
    if t.role == "private":
        return verdict(promise, t, "pass" if leaked == 0 else "fail", what, leaked=leaked, **numbers)
    if promise == "isolation.kernel" and t.zone == "movable":
        return verdict(promise, t, "skip", "onlined ZONE_MOVABLE: the kernel's own allocations cannot land there, so "
                       f"this node is no control for kernel memory (the memory-only node is): {what}",
                       leaked=leaked, **numbers)
    if leaked > 0:
        return verdict(promise, t, "xfail", f"negative control leaked: {what}", leaked=leaked, **numbers)
    return verdict(promise, t, "xpass", f"negative control did not leak, so this check could not catch a leak: {what}",
                   leaked=leaked, **numbers)


_FALLBACK = re.compile(r"Fallback order for Node (\d+):((?:\s+\d+)*)")


def fallback_orders(dmesg: str) -> dict[int, list[int]]:
    """The last ``Fallback order for Node N: a b c`` line per node (printed at boot and again
    whenever zonelists are rebuilt, e.g. after memory is hot-added)."""
    out: dict[int, list[int]] = {}
    for m in _FALLBACK.finditer(dmesg):
        out[int(m.group(1))] = [int(x) for x in m.group(2).split()]
    return out


def fallback(t: Target, orders: Mapping[int, list[int]]) -> Verdict:
    assert t.node is not None
    if not orders:
        return verdict("discovery.fallback", t, "skip", "the boot log has no 'Fallback order for Node' lines "
                       "(rotated out of the kernel log buffer?)")
    holders = {n: o for n, o in orders.items() if n != t.node and t.node in o}
    what = ("; ".join(f"node {n}'s order is {' '.join(map(str, o))}" for n, o in sorted(holders.items()))
            or f"in no other node's order ({'; '.join(f'{n}: {o}' for n, o in sorted(orders.items()))})")
    return isolation("discovery.fallback", t, len(holders), what, orders={str(k): v for k, v in orders.items()})


# --- private-only --------------------------------------------------------------------------

def in_mask(t: Target, expected_private: Iterable[int], sources: str) -> Verdict:
    """A private target is in its mask by construction; the check is that every node the topology
    provisioned private is one the kernel classes private."""
    exp = sorted(expected_private)
    if t.role == "control":
        return verdict("discovery.mask", t, "skip", "an ordinary node: no private mask applies")
    assert t.node is not None
    if exp and t.node not in exp:
        return verdict("discovery.mask", t, "fail", f"node {t.node} is private ({sources}) but the topology "
                       f"provisioned {exp}")
    return verdict("discovery.mask", t, "pass", f"node {t.node}: {sources}")


# --- opt-in promises ---------------------------------------------------------------------

def _unknown_opt_in(promise: str, t: Target, service: str, observed: str, **numbers: Any) -> Verdict:
    """The skip when the kernel does not say whether the node opted into ``service``."""
    return verdict(promise, t, "skip", f"cannot tell whether node {t.node} opted into {service}: {t.source} "
                   f"(observed: {observed})", **numbers)


def _optin(promise: str, t: Target, refused: Refusal | None, landed: int, expected_error: str | tuple[str, ...],
           what: str, **numbers: Any) -> Verdict:
    p = PROMISES[promise]
    assert p.service is not None
    allowed = t.allows(p.service)
    got = f"refused with {refused.call} {refused.error}" if refused else f"{landed} pages on node {t.node}"
    nums = dict(numbers, landed=landed, refused=refused.error if refused else None)
    if allowed is None:
        return _unknown_opt_in(promise, t, p.service, got, **nums)
    if allowed:
        ok = refused is None and landed > 0
        return verdict(promise, t, "pass" if ok else "fail", f"{what}: {got}", **nums)
    errors = (expected_error,) if isinstance(expected_error, str) else expected_error
    ok = refused is not None and refused.error in errors and landed == 0
    return verdict(promise, t, "pass" if ok else "fail", f"{what}: {got} (expected {' or '.join(errors)})", **nums)


def mbind(t: Target, refused: Refusal | None, landed: int, asked: int) -> Verdict:
    return _optin("mempolicy.mbind", t, refused, landed, "EINVAL", f"mbind {asked} pages", asked=asked)


def move_pages(t: Target, refused: Refusal | None, status_on_node: int, asked: int) -> Verdict:
    return _optin("migration.move_pages", t, refused, status_on_node, "ENODEV", f"move_pages {asked} pages",
                  asked=asked)


def migrate_pages(t: Target, refused: Refusal | None, moved: int, asked: int) -> Verdict:
    # migrate_pages(2) refuses a node the caller may not use with EINVAL; the private-node series
    # (RFC v4, 12/27) refuses a private node without NP_OPS_MIGRATION with ENODEV instead: its
    # migrate_folios_to_node() returns node_private_migrate_to()'s -ENODEV (seen on 7.2.13 + v4)
    return _optin("migration.migrate_pages", t, refused, moved, ("EINVAL", "ENODEV"),
                  f"migrate_pages of {asked} pages", asked=asked)


_KTHREAD = re.compile(r"\[?(kswapd|kcompactd)(\d+)\]?")


def kthreads(ps: str) -> dict[str, set[int]]:
    """``ps`` output -> {"kswapd": {nodes}, "kcompactd": {nodes}}."""
    out: dict[str, set[int]] = {"kswapd": set(), "kcompactd": set()}
    for m in _KTHREAD.finditer(ps):
        out[m.group(1)].add(int(m.group(2)))
    return out


def node_kthreads(t: Target, found: Mapping[str, set[int]]) -> Verdict:
    assert t.node is not None
    want = {"kswapd": t.allows("reclaim"), "kcompactd": t.allows("compaction")}
    have = {k: t.node in found.get(k, set()) for k in want}
    what = ", ".join(f"{k}{t.node} {'running' if have[k] else 'absent'}" for k in want)
    if any(v is None for v in want.values()):
        return verdict("discovery.kthreads", t, "skip", f"cannot tell whether reclaim/compaction opted in: {t.source} "
                       f"({what})", **have)
    ok = all(have[k] == want[k] for k in want)
    return verdict("discovery.kthreads", t, "pass" if ok else "fail", what, **have)


def demotion(t: Target, targets: Mapping[int, DemotionTarget]) -> Verdict:
    assert t.node is not None
    sources = sorted(n for n, d in targets.items() if t.node in d.preferred or t.node in d.fallback)
    what = (f"demotion target of node(s) {', '.join(map(str, sources))}" if sources
            else "no node demotes to it")
    allowed = t.allows("demotion")
    if allowed is None:
        return verdict("demotion.target", t, "skip", f"cannot tell whether node {t.node} opted into demotion: "
                       f"{t.source} ({what})", sources=sources)
    if not targets:
        return verdict("demotion.target", t, "skip", "the boot log has no 'Demotion targets' lines", sources=sources)
    if allowed and not sources and t.role == "control":
        return verdict("demotion.target", t, "skip", f"{what}: it shares the CPU nodes' memory tier, so there is "
                       "nothing to compare on this machine", sources=sources)
    ok = bool(sources) == allowed
    return verdict("demotion.target", t, "pass" if ok else "fail", what, sources=sources)


# --- skipped services: does the service act on pages on the node? -------------------------

def service(promise: str, t: Target, placed: int, acted: int, what: str, **numbers: Any) -> Verdict:
    """``placed`` pages were on the node before the service ran; it acted on ``acted`` of them
    (``what`` says how, with the numbers)."""
    p = PROMISES[promise]
    assert p.service is not None
    nums = dict(numbers, placed=placed, acted=acted)
    if placed == 0:
        outcome: Outcome = "fail" if t.role == "control" else "skip"
        return verdict(promise, t, outcome, f"no page reached node {t.node} to act on ({what})", **nums)
    allowed = t.allows(p.service)
    if allowed is None:
        return _unknown_opt_in(promise, t, p.service, what, **nums)
    ok = acted > 0 if allowed else acted == 0
    expect = "acts on them" if allowed else "leaves them alone"
    return verdict(promise, t, "pass" if ok else "fail", f"{what} (expected: {expect})", **nums)


def cold(t: Target, placed: int, inactive: int, born: int) -> Verdict:
    """MADV_COLD on ``placed`` pages raised the node's Inactive(anon) by ``inactive`` pages; placing
    the same pages without it raised it by ``born`` (new anonymous pages start inactive). Only
    what MADV_COLD adds beyond that is its doing; when it adds nothing on a node where it must act,
    the check cannot tell (there was no active page to deactivate), so it skips, on either role."""
    acted = inactive - born
    what = (f"MADV_COLD on {placed} pages on node {t.node}: its Inactive(anon) {inactive:+d} pages, placing them "
            f"without it {born:+d} (new anonymous pages start inactive; multi-gen LRU off for the step)")
    if placed and acted <= 0:
        return verdict("services.cold", t, "skip", f"{what}: MADV_COLD had no active page to act on, so this cannot "
                       "show whether it acts or leaves them alone", placed=placed, acted=acted, inactive=inactive,
                       born=born)
    return service("services.cold", t, placed, max(acted, 0), what, inactive=inactive, born=born)


def interleave_refused(t: Target, error: list[str], mems_allowed: list[str]) -> Verdict:
    """``numactl --interleave=all`` failed outright (the kernel refused the policy)."""
    said = error[0] if error else "no message"
    allowed = mems_allowed[0] if mems_allowed else "?"
    what = (f"numactl --interleave=all refused for every process: {said} (Mems_allowed_list {allowed}: it lists "
            f"node {t.node}, which takes no mempolicy)")
    if t.role == "private" and t.allows("mempolicy") is False:
        return verdict("isolation.interleave", t, "fail", what, refused=said, mems_allowed=allowed)
    return verdict("isolation.interleave", t, "fail", f"numactl --interleave=all failed: {said}", refused=said,
                   mems_allowed=allowed)


def services_skipped(t: Target, reason: str, promises: Iterable[str] = ()) -> list[Verdict]:
    """The same skip for several service promises (every one when ``promises`` is empty)."""
    return [verdict(p, t, "skip", reason) for p in (tuple(promises) or SERVICE_PROMISES)]


# --- lifecycle: driver rebinding, hot-unplug ----------------------------------------------

def _problems_text(problems: Sequence[Problem]) -> str:
    return f"{len(problems)} kernel report(s), first {problems[0].kind}: {problems[0].message_line}"


NORMAL_BUSY = ("a control onlined ZONE_NORMAL, and the kernel refused to offline a block (EBUSY): its own "
               "pages sit there, which an ordinary node allows (zone: movable gives a control that can be offlined)")


def _normal_control_busy(t: Target, results: Iterable[str]) -> bool:
    return t.role == "control" and t.zone == "normal" and "error:Device_or_resource_busy" in set(results)


def rebind(t: Target, r: Rebind, cycles: int, problems: Sequence[Problem]) -> Verdict:
    """Every cycle offlined, unbound to 0 bytes, bound and came back to the first size; no report."""
    if r.skipped:
        return verdict("driver.rebind", t, "skip", f"nothing to rebind: {r.skipped} ({t.provisioned})")
    lines = "; ".join(c.describe() for c in r.cycles)
    what = f"{r.dax} on {r.driver}, {r.initial_bytes >> 20} MiB: {lines}"
    nums = dict(dax=r.dax, driver=r.driver, cycles=len(r.cycles), clean=sum(c.clean(r.initial_bytes) for c in r.cycles),
                problems=len(problems))
    if problems:
        return verdict("driver.rebind", t, "fail", f"{what}; {_problems_text(problems)}", **nums)
    if _normal_control_busy(t, [c.offline for c in r.cycles]):
        return verdict("driver.rebind", t, "skip", f"{NORMAL_BUSY}: {what}", **nums)
    ok = len(r.cycles) == cycles and all(c.clean(r.initial_bytes) for c in r.cycles)
    return verdict("driver.rebind", t, "pass" if ok else "fail", what, **nums)


def hot_unplug(t: Target, o: Offline, placed: int, on_node_after: int, alive: bool, limit_s: int,
               problems: Sequence[Problem]) -> Verdict:
    """Offlining a node holding ``placed`` pages of a live process, every write under ``limit_s``."""
    what = f"{placed} pages in use on node {t.node}: {o.describe()}; {on_node_after} still on it, " + \
        ("the process alive" if alive else "the process gone")
    nums = dict(placed=placed, on_node_after=on_node_after, alive=alive, blocks=len(o.blocks),
                refused=len(o.refused), timed_out=len(o.timed_out), limit_s=limit_s, problems=len(problems))
    if placed == 0:
        outcome: Outcome = "fail" if t.role == "control" else "skip"
        return verdict("hotplug.offline", t, outcome, f"no page reached node {t.node} to be in use ({what})", **nums)
    if o.timed_out:
        return verdict("hotplug.offline", t, "fail", f"{what}: an offline write hung past {limit_s} s", **nums)
    if problems:
        return verdict("hotplug.offline", t, "fail", f"{what}; {_problems_text(problems)}", **nums)
    if _normal_control_busy(t, [b.result for b in o.blocks]):
        return verdict("hotplug.offline", t, "skip", f"{NORMAL_BUSY}: {what}", **nums)
    allowed = t.allows("migration")
    if allowed is None:
        return _unknown_opt_in("hotplug.offline", t, "migration", what, **nums)
    if allowed:
        ok = not o.refused and o.bytes_left == 0 and on_node_after == 0 and alive
    else:
        ok = bool(o.refused) and alive
    return verdict("hotplug.offline", t, "pass" if ok else "fail", what, **nums)
