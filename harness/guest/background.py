"""Guest programs held in the background (``files/hold.sh``): start one, wait for its report, stop it.

A holding program (``hold_until_signal=True`` in :mod:`.workloads`) prints its JSON report once
its memory is in place and then holds it until SIGTERM. ``hold start`` runs it in the
background, waits in the guest (one round trip) for that report or for its end, and prints its
pid, state, exit status and output; ``hold stop`` ends it. This module builds those command
lines and parses what they print (pure); :func:`launch`, :func:`start` and :func:`stop` run them
on anything with ``run(command, timeout=...)``. The plugin's ``guest.start()``, the contract and
the isolation comparison all hold programs through it.
"""

from __future__ import annotations

import itertools
import math
import shlex
from dataclasses import dataclass

from harness.runner import GuestRunner

from .lines import fields
from .protocol import GUEST_RUN_DIR, HOLD
from .workloads import Result, WorkloadError, parse, parse_pressure_progress

#: How long ``hold stop`` waits for the program to be gone.
STOP_TIMEOUT_S = 60
_IDS = itertools.count(1)


def start_command(prefix: str, command: str, timeout: float) -> str:
    """``hold start``: run ``command`` with its output at ``prefix``.out/.err/.rc; wait ``timeout`` s."""
    return shlex.join([HOLD, "start", prefix, str(max(1, math.ceil(timeout))), command])


def stop_command(pid: int, timeout: float = STOP_TIMEOUT_S) -> str:
    return shlex.join([HOLD, "stop", str(int(pid)), str(max(1, math.ceil(timeout)))])


@dataclass(frozen=True)
class Launch:
    """What ``hold start`` saw: the program reported (and holds), exited first, or timed out (killed)."""

    command: str
    pid: int
    state: str              # reported | exited | timeout
    rc: int | None          # its exit status once it ended (128+N: signal N)
    out: str                # its stdout
    err: str                # the last lines of its stderr
    full: str | None = None  # the mount point of its outputs' filesystem, if that is full now

    @property
    def report(self) -> Result | None:
        """The program's parsed report (its last line starting with ``{``), if it printed one."""
        lines = [ln for ln in self.out.splitlines() if ln.startswith("{")]
        return parse(lines[-1]) if lines else None

    def progress_mib(self) -> int:
        """How far a ``pressure`` that ended before reporting got (MiB), from its progress lines."""
        steps = parse_pressure_progress(self.err)
        return steps[-1].allocated_mib if steps else 0


def parse_start(command: str, text: str) -> Launch:
    """Parse ``hold start``'s output. Raises WorkloadError if it has no ``hold`` line."""
    parts: dict[str, list[str]] = {"head": [], "out": [], "err": []}
    section = "head"
    for ln in text.splitlines():
        if ln in ("@@ out", "@@ err"):
            section = ln[3:]
        else:
            parts[section].append(ln)
    failed = next((ln for ln in parts["head"] if ln.startswith("error ")), None)
    if failed is not None:  # hold itself failed (lib.sh's fail): its message says why
        msg = fields(failed.partition(" ")[2]).get("msg", failed)
        raise WorkloadError(f"the guest could not start a background program: {msg}: {command}",
                            detail=text[-2000:])
    line = next((ln for ln in parts["head"] if ln.startswith("hold ")), None)
    if line is None:
        raise WorkloadError(f"the guest could not start a background program: {command}", detail=text[-2000:])
    f = fields(line.partition(" ")[2])
    rc = f.get("rc", "-")
    return Launch(command, int(f["pid"]), f["state"], int(rc) if rc.isdigit() else None,
                  "".join(ln + "\n" for ln in parts["out"]), "".join(ln + "\n" for ln in parts["err"]),
                  full=f.get("full"))


@dataclass(frozen=True)
class Started:
    """A guest program holding its memory in the background: its pid and its report."""

    pid: int
    report: Result


def launch(guest: GuestRunner, command: str, *, timeout: float = 300, name: str = "bg") -> Launch:
    """Start ``command`` in the background and wait up to ``timeout`` s for its report or its end."""
    prefix = f"{GUEST_RUN_DIR}/{name}-{next(_IDS)}"
    # check=False: a failing hold prints why (e.g. no space left), parse_start says it in one line
    r = guest.run(start_command(prefix, command, timeout), timeout=timeout + 60, check=False)
    return parse_start(command, r.stdout)


def start(guest: GuestRunner, command: str, *, timeout: float = 300, name: str = "bg") -> Started:
    """Start a holding program; once it has reported, its pid and report.

    Raises WorkloadError if it exits first or does not report within ``timeout`` s (it is then killed),
    and at once, naming it, if the guest's run directory has no space left for its outputs.
    """
    got = launch(guest, command, timeout=timeout, name=name)
    report = got.report
    if report is not None:
        return Started(got.pid, report)
    if got.full is not None:
        raise WorkloadError(f"background program could not write its report: no space left on device "
                            f"(the guest's {got.full} is full): {command}",
                            hint=f"free space in the guest's {got.full}", detail=(got.out + got.err)[-2000:])
    if got.state == "timeout":
        raise WorkloadError(f"background program did not report within {timeout:g} s: {command}")
    raise WorkloadError(f"background program exited before reporting (status {got.rc}): {command}",
                        detail=(got.out + got.err)[-2000:])


def stop(guest: GuestRunner, pid: int, *, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM a held program and wait (``timeout`` s at most) until it is gone."""
    guest.run(stop_command(pid, timeout), timeout=timeout + 30)
