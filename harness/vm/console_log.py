"""Following ``console.log`` (written by QEMU itself) in a daemon thread.

:class:`ConsoleMonitor` reads the file from its start, splits it into lines
and feeds each to the pure parsers: milestones (:mod:`harness.vm.console`: guest lines
split by kernel records joined again, a later milestone implying the earlier ones),
kernel problems and OOM kills (:mod:`harness.vm.problems`). Waiters block on
it with a timeout; nothing here knows about QEMU processes or SSH.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.vm.console import GuestLineJoiner, clean_line, is_guest_failure, line_milestones
from harness.vm.problems import OomKill, Problem, ProblemScanner


@dataclass
class ConsoleState:
    """What the console has shown so far (a snapshot, see :meth:`ConsoleMonitor.snapshot`)."""

    lines: list[str] = field(default_factory=list)
    milestones: dict[str, float] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    guest_failures: list[str] = field(default_factory=list)
    oom_kills: list[OomKill] = field(default_factory=list)


class ConsoleMonitor:
    """Follows ``console.log`` in a daemon thread; parses milestones and problems.

    Waiters block on :meth:`wait` with a timeout; the thread wakes them on every
    new line. ``on_line`` (optional) is called from the thread for each line.
    """

    POLL = 0.05

    def __init__(self, log: Path, *, on_milestone: Callable[[str], None] | None = None) -> None:
        self.log = log
        self._on_milestone = on_milestone
        self._lines: list[str] = []
        self._milestones: dict[str, float] = {}
        self._failures: list[str] = []
        self._joiner = GuestLineJoiner()
        self._scanner = ProblemScanner()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0
        self._partial = b""

    # -- thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start following the log (from its beginning)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"console:{self.log}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following; reads what is left in the file first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.poll()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.poll():
                self._stop.wait(self.POLL)

    def poll(self) -> bool:
        """Read new bytes from the log now. True if there were any."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return False
        if not data:
            return False
        with self._cond:
            self._offset += len(data)
            chunks = (self._partial + data).split(b"\n")
            self._partial = chunks.pop()
            new = [m for c in chunks for m in self._add_line(clean_line(c.decode("utf-8", "replace")))]
            self._cond.notify_all()
        for milestone in new:
            if self._on_milestone:
                self._on_milestone(milestone)
        return True

    def _add_line(self, line: str) -> list[str]:
        """Take one console line; the milestones it newly proves, in boot order."""
        index = len(self._lines)
        self._lines.append(line)
        self._scanner.feed(index, line)
        joined = self._joiner.feed(line)
        self._failures.extend(g for g in joined if is_guest_failure(g))
        new = [m for m in line_milestones(line, joined) if m not in self._milestones]
        now = time.monotonic()
        for milestone in new:
            self._milestones[milestone] = now
        return new

    # -- queries -------------------------------------------------------------------

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` s until ``predicate()`` (called under the lock) holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    @property
    def line_count(self) -> int:
        """Complete console lines seen so far."""
        with self._cond:
            return len(self._lines)

    def seen(self, milestone: str) -> bool:
        """Whether the console has shown ``milestone``."""
        with self._cond:
            return milestone in self._milestones

    @property
    def problem_count(self) -> int:
        """Number of kernel problems seen so far (cheap; for 'anything new?' checks)."""
        with self._cond:
            return self._scanner.count

    def problems(self, since: int = 0) -> list[Problem]:
        """Kernel problems seen so far (from the ``since``-th on), with excerpts."""
        with self._cond:
            return self._scanner.problems(self._lines)[since:]

    def tail(self, n: int = 30) -> str:
        """The last ``n`` console lines (plus an unterminated last line)."""
        with self._cond:
            lines = self._lines[-n:]
            if self._partial:
                lines = lines + [clean_line(self._partial.decode("utf-8", "replace"))]
            return "\n".join(lines[-n:])

    @property
    def oom_count(self) -> int:
        """Number of OOM kills seen so far."""
        with self._cond:
            return len(self._scanner.oom_kills())

    def oom_kills(self, since: int = 0) -> list[OomKill]:
        """OOM kills seen so far (from the ``since``-th on)."""
        with self._cond:
            return self._scanner.oom_kills()[since:]

    def text(self) -> str:
        """Every console line so far (for a pure diagnosis)."""
        with self._cond:
            return "\n".join(self._lines)

    def guest_failures(self) -> list[str]:
        """``numa-harness:`` lines that reported a failure."""
        with self._cond:
            return list(self._failures)

    def snapshot(self) -> ConsoleState:
        """A copy of everything seen so far."""
        with self._cond:
            return ConsoleState(list(self._lines), dict(self._milestones),
                                self._scanner.problems(self._lines), list(self._failures),
                                self._scanner.oom_kills())
