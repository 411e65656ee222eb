"""cgroup v2 groups in the guest (``files/cgroup.sh``): command lines in, typed results out.

Creating a group with its controllers, running a program inside one (it joins, then execs: the
pid stays the program's), ``memory.reclaim``, confining every movable task to a cpuset and
releasing it, removing a group. The shell file does the work; this module builds its command
lines and parses its one-line answers (pure). Used by the contract (reclaim, the isolation
comparison's cpuset) and by tests (``guest-tests``' ``cgroup`` fixture).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .lines import line
from .protocol import CGROUP

#: Where the guest's /init mounts cgroup2.
ROOT = "/sys/fs/cgroup"


def make(path: str, *controllers: str) -> str:
    """Create ``path`` with ``controllers`` enabled in its parent."""
    return shlex.join([CGROUP, "make", path, *controllers])


def run_in(path: str, command: str) -> str:
    """``command`` (a guest command line) run inside the cgroup ``path``."""
    return f"{shlex.join([CGROUP, 'run', path])} {command}"


def reclaim(path: str, amount: str) -> str:
    """Write ``amount`` (``8M``) to the group's ``memory.reclaim``."""
    return shlex.join([CGROUP, "reclaim", path, amount])


def confine(path: str, mems: str) -> str:
    """A cpuset ``path`` with ``cpuset.mems`` = ``mems``, every movable task of its parent moved into it."""
    return shlex.join([CGROUP, "confine", path, mems])


def release(path: str) -> str:
    """Move the group's tasks back to its parent and remove it."""
    return shlex.join([CGROUP, "release", path])


def remove(path: str) -> str:
    """Kill the group's tasks and remove it."""
    return shlex.join([CGROUP, "remove", path])


@dataclass(frozen=True)
class Reclaimed:
    ok: bool
    reason: str = ""     # the write's error when the kernel reclaimed less than asked


def parse_reclaim(text: str) -> Reclaimed:
    f = line(text, "reclaim", "cgroup")
    return Reclaimed(f.get("status") == "ok", f.get("reason", ""))


def parse_confine(text: str) -> tuple[int, int]:
    """(tasks moved in, tasks left in the root)."""
    f = line(text, "confine", "cgroup")
    return int(f["moved"]), int(f["left"])
