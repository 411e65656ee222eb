"""The kernel services the contract turns on a node's pages (``files/services.sh``): hugetlb
reservations, the multi-gen LRU, KSM and compaction. Command lines in, typed results out (pure);
the sysfs files themselves are named only in the shell file.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from harness.errors import GuestCommandError

from .lines import line
from .protocol import SERVICES


def probe(node: int) -> str:
    return shlex.join([SERVICES, "probe", str(int(node))])


def hugetlb(node: int, count: int) -> str:
    """Ask ``node`` for ``count`` 2 MiB huge pages, read how many it got, give them back."""
    return shlex.join([SERVICES, "hugetlb", str(int(node)), str(int(count))])


def lru_gen(value: str) -> str:
    """Write ``value`` (``n``: off, or what :func:`probe` read) to the multi-gen LRU's switch."""
    return shlex.join([SERVICES, "lru-gen", value])


def ksm(pid: int, want: int, seconds: float) -> str:
    """Run KSM until ``pid`` has ``want`` pages merged or ``seconds`` pass; then unmerge and stop it."""
    return shlex.join([SERVICES, "ksm", str(int(pid)), str(int(want)), str(max(1, round(seconds)))])


def compact(node: int) -> str:
    return shlex.join([SERVICES, "compact", str(int(node))])


@dataclass(frozen=True)
class Probe:
    ksm: bool                 # /sys/kernel/mm/ksm exists
    compact: bool             # the node has a compact file (CONFIG_COMPACTION)
    lru_gen: str | None       # the multi-gen LRU's setting, None if the kernel has none


def parse_probe(text: str) -> Probe:
    f = line(text, "probe", "services")
    lru = f.get("lru_gen", "absent")
    return Probe(f.get("ksm") == "yes", f.get("compact") == "yes", None if lru in ("absent", "") else lru)


def parse_hugetlb(text: str) -> int:
    """How many huge pages the node gave."""
    got = line(text, "hugetlb", "services").get("got", "")
    return int(got) if got.isdigit() else 0


def parse_ksm(text: str) -> int:
    """How many of the process's pages KSM had merged."""
    return int(line(text, "ksm", "services").get("merged", "0") or 0)


def parse_compact(text: str) -> None:
    """Raises GuestCommandError if the node's compaction write failed."""
    f = line(text, "compact", "services")
    if f.get("status") != "ok":
        raise GuestCommandError(f"compacting node {f.get('node')} failed: {f.get('reason', '?')}", detail=text[-2000:])
