"""The guest workload programs from the host: command lines in, typed results out.

The programs (``programs/*.c``: ``place``, ``move``, ``migrate``, ``pressure``) are
packed into the image under :data:`PROGRAMS_DIR`; each prints one JSON object
(``programs/README.md`` documents every key). This module builds their command
lines (:func:`place`, :func:`move`, :func:`migrate`, :func:`pressure`: absolute
paths, shell-quoted, so they run from any shell whatever its PATH) and parses
their output into dataclasses (:func:`parse_place` ... or :func:`parse`, which
picks by the ``program`` key). :func:`run` does both through any object with the
VM's ``run`` method.

A call the kernel refused is data, not an error: ``result.ok`` is False and
``result.refusal`` says which call and errno. :class:`WorkloadError` is raised
only for output that is not what the programs print, a usage error (exit 2) or
a program that did not run.

Over 400 lines on purpose: four programs' result types, parsers and command-line
builders side by side, so a key a program prints and the field that reads it
change together.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.errors import HarnessError
from harness.guest.protocol import GUEST_TESTS_DIR
from harness.runner import GuestRunner

#: Where the image builder puts the programs in the guest (the image's guest-tests dir).
PROGRAMS_DIR = GUEST_TESTS_DIR

POLICIES = ("default", "bind", "preferred", "preferred-many", "interleave", "weighted-interleave", "local")
KINDS = ("anon", "shared", "memfd", "file")
ADVICE = ("cold", "pageout")
THP = ("off", "on", "default")
VIA = ("mbind", "set_mempolicy")


T = TypeVar("T")


class WorkloadError(HarnessError):
    """A guest program was called wrongly, did not run, or printed something unexpected."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Refusal:
    """A syscall (or file write) the kernel refused: ``call``, ``errno`` and its name."""

    call: str
    errno: int
    error: str


@dataclass(frozen=True)
class PageCounts:
    """Pages per node (and per negative status, by errno name) from a move_pages query,
    a move_pages status array or numa_maps. ``refusal`` is set when the query itself failed."""

    nodes: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    total: int = 0
    refusal: Refusal | None = None

    def on(self, node: int) -> int:
        """Pages on ``node`` (0 if none)."""
        return self.nodes.get(node, 0)

    @property
    def present(self) -> int:
        """Pages that are on some node (the total minus error statuses)."""
        return sum(self.nodes.values())


@dataclass(frozen=True)
class Policy:
    """A policy as asked for, or (``readback``) as get_mempolicy reported it."""

    mode: str
    nodes: str
    via: str | None = None
    flags: tuple[str, ...] = ()
    mode_flags: int = 0


@dataclass(frozen=True)
class Advised:
    """``place --madvise``: the advice given after the first placement query, and a second query."""

    advice: str                      # cold | pageout
    refusal: Refusal | None
    placement: PageCounts | None     # None when madvise was refused


@dataclass(frozen=True)
class PlaceResult:
    pid: int
    ok: bool
    refusal: Refusal | None
    size_mib: int
    kind: str
    thp: str
    page_size: int
    npages: int
    addr: str | None                 # the buffer's start, hex as numa_maps prints it
    mlock: bool
    prefault: bool
    mergeable: bool
    hot: bool
    policy: Policy
    readback: Policy | Refusal
    placement: PageCounts | None     # None when nothing was mapped
    elapsed: dict[str, float]
    hold: dict[str, Any] | None
    madvise: Advised | None = None   # --madvise: the advice and where the pages were after it


@dataclass(frozen=True)
class MoveResult:
    pid: int
    ok: bool
    refusal: Refusal | None
    size_mib: int
    kind: str
    thp: str
    npages: int
    from_node: int | None
    to_node: int
    flag: str
    pages_requested: int
    before: PageCounts
    status: PageCounts               # move_pages' per-page status array
    not_migrated: int | None         # move_pages' return; None if it was not called or refused
    after: PageCounts
    checksum_before: str
    checksum_after: str
    checksum_match: bool
    elapsed: dict[str, float]


@dataclass(frozen=True)
class MigrateResult:
    pid: int
    target_pid: int
    spawned: bool
    ok: bool
    refusal: Refusal | None
    from_nodes: str
    to_nodes: str
    not_migrated: int | None         # migrate_pages' return (pages not migrated)
    numa_maps_before: PageCounts     # the target's anonymous mappings, from numa_maps
    numa_maps_after: PageCounts
    pages_before: PageCounts | None  # spawned child only: exact query of its buffer
    pages_after: PageCounts | None
    size_mib: int | None
    npages: int | None
    checksum_before: str | None
    checksum_after: str | None
    checksum_match: bool | None
    elapsed: dict[str, float]


@dataclass(frozen=True)
class PressureStep:
    step: int
    allocated_mib: int
    elapsed_s: float
    target_free_mib: float
    node_free_mib: dict[int, float]
    mem_available_mib: float
    cgroup_current_mib: float | None


@dataclass(frozen=True)
class PressureResult:
    pid: int
    ok: bool
    refusal: Refusal | None
    target: str                      # "node:N", "machine" or "cgroup:PATH"
    until: str                       # "free-below:N" or "total:N"
    step_mib: int
    thp: str
    guard: bool
    reserve_mib: int
    policy: Policy
    reached: bool
    cut_short: bool
    reason: str
    allocated_mib: int
    fill_s: float
    target_free_mib: float
    node_free_mib: dict[int, float]
    placement: PageCounts
    steps: list[PressureStep]
    hold: dict[str, Any] | None


Result = PlaceResult | MoveResult | MigrateResult | PressureResult


# --------------------------------------------------------------------------- parsing


def _load(text: str, program: str | None) -> dict[str, Any]:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        raise WorkloadError(f"a guest program printed {len(lines)} lines on stdout, not one JSON object",
                            detail=text[-2000:])
    try:
        obj = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise WorkloadError(f"a guest program printed invalid JSON ({e})", detail=text[-2000:]) from None
    if not isinstance(obj, dict) or "program" not in obj:
        raise WorkloadError("a guest program's output has no 'program' key", detail=text[-2000:])
    if program is not None and obj["program"] != program:
        raise WorkloadError(f"expected output of '{program}', got '{obj['program']}'")
    return obj


def _refusal(obj: Mapping[str, Any]) -> Refusal | None:
    if obj.get("ok", True):
        return None
    return Refusal(str(obj["call"]), int(obj["errno"]), str(obj["error"]))


def _pages(obj: Mapping[str, Any] | None) -> PageCounts:
    if obj is None:
        raise WorkloadError("a page count is missing from a guest program's output")
    if "pages" not in obj:
        return PageCounts(refusal=_refusal(obj))
    return PageCounts({int(k): int(v) for k, v in obj["pages"].items()},
                      {str(k): int(v) for k, v in obj["page_errors"].items()}, int(obj["total"]))


def _maybe_pages(obj: Mapping[str, Any] | None) -> PageCounts | None:
    return None if obj is None else _pages(obj)


def _policy(obj: Mapping[str, Any]) -> Policy:
    return Policy(str(obj["mode"]), str(obj["nodes"]), obj.get("via"), tuple(obj.get("flags", ())),
                  int(obj.get("mode_flags", 0)))


def _node_floats(obj: Mapping[str, Any]) -> dict[int, float]:
    return {int(k): float(v) for k, v in obj.items()}


def _parse(program: str, text: str, build: Callable[[dict[str, Any]], T]) -> T:
    obj = _load(text, program)
    try:
        return build(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise WorkloadError(f"'{program}' output lacks or mangles {e}", detail=text[-2000:]) from None


def _build_place(o: dict[str, Any]) -> PlaceResult:
    rb = o["readback"]
    return PlaceResult(
        int(o["pid"]), bool(o["ok"]), _refusal(o), int(o["size_mib"]), o["kind"], o["thp"], int(o["page_size"]),
        int(o["npages"]), o["addr"], bool(o["mlock"]), bool(o["prefault"]), bool(o.get("mergeable", False)),
        bool(o.get("hot", False)), _policy(o["policy"]),
        _policy(rb) if rb.get("ok") else _refusal(rb) or Refusal("get_mempolicy", 0, ""),
        _maybe_pages(o["placement"]), {k: float(v) for k, v in o["elapsed"].items()}, o["hold"],
        _advised(o.get("madvise")))


def _advised(o: Mapping[str, Any] | None) -> Advised | None:
    if o is None:
        return None
    return Advised(o["advice"], _refusal(o), _maybe_pages(o.get("placement")))


def _build_move(o: dict[str, Any]) -> MoveResult:
    return MoveResult(
        int(o["pid"]), bool(o["ok"]), _refusal(o), int(o["size_mib"]), o["kind"], o["thp"], int(o["npages"]),
        o["from_node"], int(o["to_node"]), o["flag"], int(o["pages_requested"]), _pages(o["before"]),
        _pages(o["status"]), o["not_migrated"], _pages(o["after"]), o["checksum_before"], o["checksum_after"],
        bool(o["checksum_match"]), {k: float(v) for k, v in o["elapsed"].items()})


def _build_migrate(o: dict[str, Any]) -> MigrateResult:
    return MigrateResult(
        int(o["pid"]), int(o["target_pid"]), bool(o["spawned"]), bool(o["ok"]), _refusal(o), o["from"], o["to"],
        o["not_migrated"], _pages(o["numa_maps_before"]), _pages(o["numa_maps_after"]),
        _maybe_pages(o["pages_before"]), _maybe_pages(o["pages_after"]), o.get("size_mib"), o.get("npages"),
        o.get("checksum_before"), o.get("checksum_after"), o.get("checksum_match"),
        {k: float(v) for k, v in o["elapsed"].items()})


def _step(o: Mapping[str, Any]) -> PressureStep:
    return PressureStep(int(o["step"]), int(o["allocated_mib"]), float(o["elapsed_s"]), float(o["target_free_mib"]),
                        _node_floats(o["node_free_mib"]), float(o["mem_available_mib"]), o.get("cgroup_current_mib"))


def _build_pressure(o: dict[str, Any]) -> PressureResult:
    t = o["target"]
    target = {"node": lambda: f"node:{t['node']}", "machine": lambda: "machine",
              "cgroup": lambda: f"cgroup:{t['cgroup']}"}[t["kind"]]()
    return PressureResult(
        int(o["pid"]), bool(o["ok"]), _refusal(o), target, f"{o['until']['kind']}:{o['until']['mib']}",
        int(o["step_mib"]), o["thp"], bool(o["guard"]), int(o["reserve_mib"]), _policy(o["policy"]),
        bool(o["reached"]), bool(o["cut_short"]), o["reason"], int(o["allocated_mib"]), float(o["fill_s"]),
        float(o["target_free_mib"]), _node_floats(o["node_free_mib"]), _pages(o["placement"]),
        [_step(s) for s in o["steps"]], o["hold"])


def parse_place(text: str) -> PlaceResult:
    """``place``'s stdout -> :class:`PlaceResult` (WorkloadError if malformed)."""
    return _parse("place", text, _build_place)


def parse_move(text: str) -> MoveResult:
    """``move``'s stdout -> :class:`MoveResult`."""
    return _parse("move", text, _build_move)


def parse_migrate(text: str) -> MigrateResult:
    """``migrate``'s stdout -> :class:`MigrateResult`."""
    return _parse("migrate", text, _build_migrate)


def parse_pressure(text: str) -> PressureResult:
    """``pressure``'s stdout -> :class:`PressureResult`."""
    return _parse("pressure", text, _build_pressure)


_PARSERS: dict[str, Callable[[str], Result]] = {
    "place": parse_place, "move": parse_move, "migrate": parse_migrate, "pressure": parse_pressure}


def parse(text: str) -> Result:
    """Any program's stdout -> its result dataclass, chosen by the ``program`` key."""
    name = _load(text, None)["program"]
    if name not in _PARSERS:
        raise WorkloadError(f"unknown guest program '{name}' in output")
    return _PARSERS[name](text)


def parse_pressure_progress(stderr: str) -> list[PressureStep]:
    """The per-step JSON lines ``pressure`` writes on stderr (other lines are skipped)."""
    steps = []
    for ln in stderr.splitlines():
        if ln.startswith("{"):
            try:
                steps.append(_step(json.loads(ln)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return steps


# --------------------------------------------------------------------------- command lines


def _choice(what: str, value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise WorkloadError(f"{what} '{value}' is not one of {', '.join(allowed)}")
    return value


def node_list(nodes: str | int | Iterable[int]) -> str:
    """``"0-1,3"`` kept as is; ``1`` -> ``"1"``; ``[0, 1]`` -> ``"0,1"``."""
    if isinstance(nodes, str):
        return nodes
    if isinstance(nodes, int):
        return str(nodes)
    return ",".join(str(int(n)) for n in nodes)


def _cmd(program: str, args: list[str]) -> str:
    return shlex.join([f"{PROGRAMS_DIR}/{program}", *args])


def _policy_args(policy: str | None, nodes, via: str | None, move: bool, move_all: bool, strict: bool) -> list[str]:
    a: list[str] = []
    if policy is not None:
        a += ["--policy", _choice("policy", policy, POLICIES)]
    if nodes is not None:
        a += ["--nodes", node_list(nodes)]
    if via is not None:
        a += ["--via", _choice("via", via, VIA)]
    if (move or move_all or strict) and via == "set_mempolicy":
        raise WorkloadError("move/move_all/strict are mbind flags: not with via='set_mempolicy'")
    return a + ["--move"] * move + ["--move-all"] * move_all + ["--strict"] * strict


def _hold_args(hold: float | None, hold_until_signal: bool) -> list[str]:
    if hold is not None and hold_until_signal:
        raise WorkloadError("hold and hold_until_signal exclude each other")
    return (["--hold", f"{hold:g}"] if hold is not None else []) + ["--hold-until-signal"] * hold_until_signal


def place(size_mib: int, *, policy: str | None = None, nodes: str | int | Iterable[int] | None = None,
          via: str | None = None, kind: str = "anon", thp: str = "off", mlock: bool = False,
          prefault: bool = False, move: bool = False, move_all: bool = False, strict: bool = False,
          mergeable: bool = False, madvise: str | None = None, hot: bool = False, hold: float | None = None,
          hold_until_signal: bool = False) -> str:
    """The ``place`` command line (see programs/README.md for what each option does)."""
    if hot and hold is None and not hold_until_signal:
        raise WorkloadError("hot keeps the pages hot while holding: give hold= or hold_until_signal=True")
    a = ["--size", str(int(size_mib)), "--kind", _choice("kind", kind, KINDS), "--thp", _choice("thp", thp, THP)]
    a += _policy_args(policy, nodes, via, move, move_all, strict)
    a += ["--mlock"] * mlock + ["--prefault"] * prefault + ["--mergeable"] * mergeable
    a += ["--madvise", _choice("madvise", madvise, ADVICE)] if madvise else []
    a += _hold_args(hold, hold_until_signal) + ["--hot"] * hot
    return _cmd("place", a)


def move(size_mib: int, to: int, *, from_node: int | None = None, pages: int | None = None,
         kind: str = "anon", thp: str = "off", move_all: bool = False) -> str:
    """The ``move`` command line."""
    a = ["--size", str(int(size_mib)), "--to", str(int(to)), "--kind", _choice("kind", kind, KINDS),
         "--thp", _choice("thp", thp, THP)]
    if from_node is not None:
        a += ["--from-node", str(int(from_node))]
    if pages is not None:
        a += ["--pages", str(int(pages))]
    return _cmd("move", a + ["--all"] * move_all)


def migrate(from_nodes: str | int | Iterable[int], to_nodes: str | int | Iterable[int], *,
            pid: int | None = None, size_mib: int | None = None, kind: str = "anon", thp: str = "off") -> str:
    """The ``migrate`` command line: of process ``pid``, or of a child holding ``size_mib``."""
    if (pid is None) == (size_mib is None):
        raise WorkloadError("migrate wants exactly one of pid= (a running process) or size_mib= (its own child)")
    a = ["--from", node_list(from_nodes), "--to", node_list(to_nodes)]
    if pid is not None:
        return _cmd("migrate", a + ["--pid", str(int(pid))])
    return _cmd("migrate", a + ["--size", str(int(size_mib or 0)), "--kind", _choice("kind", kind, KINDS),
                                "--thp", _choice("thp", thp, THP)])


def pressure(target: str, until: str, *, step_mib: int = 16, policy: str | None = None,
             nodes: str | int | Iterable[int] | None = None, via: str | None = None, thp: str = "off",
             reserve_mib: int | None = None, guard: bool = True, hold: float | None = None,
             hold_until_signal: bool = False) -> str:
    """The ``pressure`` command line. ``target``: ``node:N``, ``machine`` or ``cgroup:PATH``;
    ``until``: ``free-below:MiB`` or ``total:MiB``."""
    if not (target == "machine" or target.startswith(("node:", "cgroup:"))):
        raise WorkloadError(f"pressure target '{target}' is not node:N, machine or cgroup:PATH")
    if not until.startswith(("free-below:", "total:")):
        raise WorkloadError(f"pressure until '{until}' is not free-below:MiB or total:MiB")
    a = ["--target", target, "--until", until, "--step", str(int(step_mib)), "--thp", _choice("thp", thp, THP)]
    a += _policy_args(policy, nodes, via, False, False, False)
    if reserve_mib is not None:
        a += ["--reserve", str(int(reserve_mib))]
    return _cmd("pressure", a + ["--no-guard"] * (not guard) + _hold_args(hold, hold_until_signal))


# --------------------------------------------------------------------------- running


def run(guest: GuestRunner, command: str, *, timeout: float = 120) -> Result:
    """Run a command line built here and parse its output. Exit 2 (usage) or any other
    non-zero exit raises WorkloadError with the program's stderr."""
    r = guest.run(command, timeout=timeout, check=False)
    if r.exit_status != 0:
        raise WorkloadError(f"guest program exited with status {r.exit_status}: {command}",
                            hint="exit 2 is a usage error" if r.exit_status == 2 else None,
                            detail=(r.stderr or r.stdout)[-2000:])
    return parse(r.stdout)
