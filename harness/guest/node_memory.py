"""Node-memory operations in the guest (``files/node-memory.sh``): command lines in, typed results out.

The contract's service, driver and hot-unplug checks use it: a zram swap device so reclaim
and ``MADV_PAGEOUT`` have somewhere to put anonymous pages, unbinding and rebinding the driver
of a node's dax device, offlining a node's memory blocks under a time limit. The shell file
does the work; this module builds its command lines and parses its ``key=value`` lines
(pure, tested on recorded output).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError

from .lines import fields
from .protocol import NODE_MEMORY


class NodeMemoryError(HarnessError):
    """node-memory reported an error of its own (a usage or sysfs problem, not a finding)."""


def swap_on(mib: int) -> str:
    return f"{NODE_MEMORY} swap-on {int(mib)}"


def swap_off() -> str:
    return f"{NODE_MEMORY} swap-off"


#: ``movable`` (ZONE_MOVABLE) or ``normal`` -> what a memory block's ``state`` file takes.
ONLINE = {"movable": "online_movable", "normal": "online"}


def rebind(node: int, cycles: int, seconds: int, zone: str = "normal") -> str:
    return f"{NODE_MEMORY} rebind {int(node)} {int(cycles)} {int(seconds)} {ONLINE[zone]}"


def offline(node: int, seconds: int) -> str:
    return f"{NODE_MEMORY} offline {int(node)} {int(seconds)}"


def online(node: int, zone: str = "normal") -> str:
    return f"{NODE_MEMORY} online {int(node)} {ONLINE[zone]}"


def movable(node: int) -> str:
    """Offline every block of ``node`` that can be and online it movable."""
    return f"{NODE_MEMORY} movable {int(node)}"


def parse_movable(text: str) -> tuple[int, int]:
    """(blocks onlined movable, blocks that could not be offlined)."""
    for word, f in _lines(text):
        if word == "movable":
            return int(f["ok"]), int(f["bad"])
    raise NodeMemoryError("node-memory printed no movable line", detail=text[-2000:])


def _lines(text: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word in ("swap", "device", "cycle", "block", "done", "movable", "error"):
            out.append((word, fields(rest)))
    for word, f in out:
        if word == "error":
            raise NodeMemoryError(f"node-memory: {f.get('msg', '?')}", detail=text[-2000:])
    return out


def result_ok(result: str) -> bool:
    return result == "ok"


def describe_result(result: str) -> str:
    """``error:Device_or_resource_busy`` -> ``Device or resource busy``."""
    return result.removeprefix("error:").replace("_", " ")


@dataclass(frozen=True)
class Swap:
    ok: bool
    bytes: int = 0
    reason: str = ""


def parse_swap(text: str) -> Swap:
    for word, f in _lines(text):
        if word == "swap":
            return Swap(f.get("status") in ("ok", "off"), int(f.get("bytes", 0)), f.get("reason", ""))
    raise NodeMemoryError("node-memory printed no swap line", detail=text[-2000:])


@dataclass(frozen=True)
class Cycle:
    n: int
    offline: str          # ok | timeout | error:TEXT
    unbind: str
    unbound_bytes: int    # the node's online memory between unbind and bind
    bind: str
    bytes: int            # the node's online memory after bind and onlining

    def clean(self, initial: int) -> bool:
        return (all(result_ok(r) for r in (self.offline, self.unbind, self.bind))
                and self.unbound_bytes == 0 and self.bytes == initial)

    def describe(self) -> str:
        parts = [f"offline {describe_result(self.offline)}", f"unbind {describe_result(self.unbind)}",
                 f"{self.unbound_bytes >> 20} MiB left unbound", f"bind {describe_result(self.bind)}",
                 f"{self.bytes >> 20} MiB back"]
        return f"cycle {self.n}: " + ", ".join(parts)


@dataclass(frozen=True)
class Rebind:
    node: int
    skipped: str          # why nothing was rebound ("" when it was)
    dax: str = ""
    driver: str = ""
    initial_bytes: int = 0
    cycles: tuple[Cycle, ...] = ()
    final_bytes: int = 0


def parse_rebind(text: str) -> Rebind:
    node, skipped, dax, driver, initial, final = -1, "", "", "", 0, 0
    cycles = []
    for word, f in _lines(text):
        if word == "device":
            node = int(f["node"])
            if f.get("status") == "skipped":
                skipped = f.get("reason", "skipped")
            else:
                dax, driver, initial = f["dax"], f["driver"], int(f["bytes"])
        elif word == "cycle":
            cycles.append(Cycle(int(f["n"]), f["offline"], f["unbind"], int(f["unbound_bytes"]), f["bind"],
                                int(f["bytes"])))
        elif word == "done":
            final = int(f["bytes"])
    if node < 0:
        raise NodeMemoryError("node-memory rebind printed no device line", detail=text[-2000:])
    return Rebind(node, skipped, dax, driver, initial, tuple(cycles), final)


@dataclass(frozen=True)
class Block:
    name: str
    result: str           # ok | timeout | error:TEXT
    seconds: float


@dataclass(frozen=True)
class Offline:
    node: int
    blocks: tuple[Block, ...]
    bytes_left: int       # the node's online memory afterwards

    @property
    def timed_out(self) -> list[Block]:
        return [b for b in self.blocks if b.result == "timeout"]

    @property
    def refused(self) -> list[Block]:
        return [b for b in self.blocks if b.result.startswith("error:")]

    def describe(self) -> str:
        done = sum(result_ok(b.result) for b in self.blocks)
        worst = max((b.seconds for b in self.blocks), default=0.0)
        text = f"{done} of {len(self.blocks)} memory blocks offlined (slowest {worst:.1f} s)"
        if self.refused:
            text += f", {len(self.refused)} refused ({describe_result(self.refused[0].result)})"
        if self.timed_out:
            text += f", {len(self.timed_out)} hit the time limit"
        return text + f", {self.bytes_left >> 20} MiB still online"


def parse_offline(text: str) -> Offline:
    node, left = -1, 0
    blocks = []
    for word, f in _lines(text):
        if word == "block":
            node = int(f["node"])
            blocks.append(Block(f["name"], f["result"], float(f["seconds"])))
        elif word == "done":
            node, left = int(f["node"]), int(f["bytes"])
    if node < 0:
        raise NodeMemoryError("node-memory offline printed no result", detail=text[-2000:])
    return Offline(node, tuple(blocks), left)
