"""Kernel problems on the guest console, found by pure functions (unit-tested on recorded logs).

A *problem* is a report the kernel prints when something is wrong in the
kernel: a panic, an oops, a ``BUG:``, a ``WARNING:``, a stall (RCU stall, soft or
hard lockup, hung task), a failed page allocation (``warn_alloc``), a bare call trace.
An *OOM kill* is not one: the kernel did its job (it freed memory by
killing a process) and a test may provoke one on purpose. Its report also
carries a call trace, so the scanner recognises the whole OOM report
(``X invoked oom-killer:`` ... ``Out of memory: Killed process``) and records
an :class:`OomKill` instead of a problem.

This module knows console *text* only: nothing about files, sockets or QEMU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.vm.console import GUEST_PREFIX, clean_line

PANIC = "panic"
OOPS = "oops"
BUG = "bug"
WARNING = "warning"
STALL = "stall"
TRACE = "call-trace"
CUT_HERE = "cut-here"
#: ``warn_alloc``: "COMM: page allocation failure: order:N, mode:...", then a stack dump and
#: Mem-Info. An OOM victim prints one when its own allocations fail while it dies.
ALLOC_FAILURE = "allocation-failure"

_SEVERITY = {CUT_HERE: 0, TRACE: 1, ALLOC_FAILURE: 1, STALL: 2, WARNING: 2, BUG: 3, OOPS: 4, PANIC: 5}

#: (kind, pattern). Searched in order; the first match classifies the line.
#: Deliberately NOT matched (seen on clean boots, or not kernel bugs):
#: ``ACPI BIOS Error``/``ACPI Error`` (firmware tables, common under QEMU),
#: ``RETBleed: WARNING: ...``/other mitigation notices (no ``WARNING: CPU:``),
#: ``DEBUG:`` (``\bBUG:`` needs a word boundary), user space output.
_PROBLEM_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (PANIC, re.compile(r"Kernel panic - not syncing")),
    (OOPS, re.compile(r"\bOops: ")),
    (OOPS, re.compile(r"\bgeneral protection fault\b")),
    (BUG, re.compile(r"\bkernel BUG at ")),
    # Lockup detectors (kernel/watchdog.c, pr_fmt "watchdog: "): a soft lockup prints
    # "BUG: soft lockup - CPU#%d stuck for %us! [%s:%d]", a stall rather than a bug.
    (STALL, re.compile(r"\bBUG: soft lockup - CPU#\d+ stuck for \d+s!")),
    (STALL, re.compile(r"\bWatchdog detected hard LOCKUP on cpu \d+")),
    (BUG, re.compile(r"(?<![\w-])BUG: ")),
    (BUG, re.compile(r"\b(UBSAN|KASAN|KFENCE|KCSAN|KMSAN): ")),
    (WARNING, re.compile(r"\bWARNING: CPU: \d+")),
    (WARNING, re.compile(r"\bWARNING: (possible|suspicious|inconsistent|bad unlock)\b")),  # lockdep
    (STALL, re.compile(r"\bINFO: task \S+ blocked for more than \d+ seconds")),
    # RCU stall warnings (kernel/rcu/tree_stall.h, tree_exp.h, tasks.h; pr_fmt "rcu: " in
    # tree.c only): "INFO: %s detected stalls on CPUs/tasks:", "INFO: %s self-detected stall
    # on CPU", "INFO: %s detected expedited stalls on CPUs/tasks: {", "INFO: rcu_tasks
    # detected stalls on tasks:".
    (STALL, re.compile(r"\bINFO: rcu\w* (self-)?detected (expedited )?stalls?\b")),
    (ALLOC_FAILURE, re.compile(r": page allocation failure: order:\d+")),
    (CUT_HERE, re.compile(r"-+\[ cut here \]-+")),
    (TRACE, re.compile(r"\bCall Trace:")),
)
_END_TRACE = re.compile(r"-+\[ end trace [0-9a-f]+ \]-+|-+\[ end Kernel panic")

#: Lines quoted after the problem line in an excerpt.
EXCERPT_AFTER = 20
#: A marker (cut here / Call Trace) within this many lines of the previous
#: problem's first line belongs to that problem, not to a new one.
_MERGE_WINDOW = 60
#: Likewise a real problem line (a BUG followed by its Oops) within this many.
_MERGE_WINDOW_STRONG = 12


def classify_line(line: str) -> str | None:
    """The problem kind a console line starts (``panic``, ``oops``, ``bug`` ...), or None."""
    if GUEST_PREFIX in line:
        return None
    for kind, pattern in _PROBLEM_PATTERNS:
        if pattern.search(line):
            return kind
    return None


@dataclass(frozen=True)
class Problem:
    """A kernel problem seen on the console.

    ``line`` is the most telling line (``BUG: kernel NULL pointer dereference``
    rather than the ``cut here`` marker), ``start`` the index of the first line
    of the report, ``index`` the index of ``line``; ``excerpt`` is the report
    from ``start`` to ``EXCERPT_AFTER`` lines after ``line``.
    """

    kind: str
    line: str
    index: int
    start: int
    excerpt: str = ""

    @property
    def fatal(self) -> bool:
        """A panic stops the guest (``panic=-1`` + ``-no-reboot`` make QEMU exit)."""
        return self.kind == PANIC

    @property
    def message_line(self) -> str:
        """``line`` without the printk timestamp / caller prefix."""
        return _strip_printk_prefix(self.line)


_PRINTK_PREFIX = re.compile(r"^(<\d+>)?(\[\s*\d+\.\d+\])?(\[\s*[CT]\d+\])?\s*")


def _strip_printk_prefix(line: str) -> str:
    return _PRINTK_PREFIX.sub("", line, count=1)


# --------------------------------------------------------------------------
# OOM kills
# --------------------------------------------------------------------------

_OOM_INVOKED = re.compile(r"\b(?P<comm>\S+) invoked oom-killer: ")
_OOM_KILL = re.compile(r"\boom-kill:(?P<fields>\S+)")
_OOM_KILLED = re.compile(r"\b(?:Memory cgroup out of memory|Out of memory(?: \([^)]*\))?): "
                         r"Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)"
                         r"(?:.*?\banon-rss:(?P<anon>\d+)kB)?")
#: An OOM report is at most this many lines (task list included) from "invoked oom-killer".
_OOM_REPORT_LINES = 400


@dataclass(frozen=True)
class OomKill:
    """One process killed by the guest kernel's OOM killer.

    From ``oom-kill:constraint=...,nodemask=...,mems_allowed=...,task=...,pid=...``
    and ``Out of memory: Killed process PID (COMM) ... anon-rss:NkB``.
    ``nodemask`` is the allocation's node mask (``(null)`` = any node);
    ``constraint`` is ``CONSTRAINT_NONE`` (the whole machine),
    ``CONSTRAINT_MEMORY_POLICY`` (an mbind/set_mempolicy node set),
    ``CONSTRAINT_CPUSET`` or ``CONSTRAINT_MEMCG``.
    """

    process: str
    pid: int
    line: str  # the "Out of memory: Killed process" line, as printed
    index: int
    invoked_by: str | None = None  # the task whose allocation triggered it
    constraint: str | None = None
    nodemask: str | None = None
    mems_allowed: str | None = None
    anon_rss_kb: int | None = None

    @property
    def message_line(self) -> str:
        """``line`` without the printk timestamp."""
        return _strip_printk_prefix(self.line)

    def describe(self) -> str:
        """``memhog (pid 177) killed by the OOM killer (CONSTRAINT_NONE, nodemask (null), mems 0-1)``."""
        where = ", ".join(x for x in (self.constraint, self.nodemask and f"nodemask {self.nodemask}",
                                      self.mems_allowed and f"mems {self.mems_allowed}") if x)
        return f"{self.process} (pid {self.pid}) killed by the OOM killer" + (f" ({where})" if where else "")


def _oom_fields(text: str) -> dict[str, str]:
    """``constraint=A,nodemask=0-1,3,global_oom,...`` -> dict (node lists may hold commas)."""
    out: dict[str, str] = {}
    key = None
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if eq:
            key = k
            out[k] = v
        elif key is not None and re.fullmatch(r"\d+(-\d+)?", part):  # mems_allowed=0-1,3
            out[key] += "," + part
        else:  # a flag such as global_oom / oom_memcg
            key = None
    return out


class ProblemScanner:
    """Incremental problem finder: feed console lines one at a time.

    Lines of one report (``cut here``, ``WARNING: CPU:``, ``Call Trace:`` ...)
    become one :class:`Problem`; a panic always starts its own, so the panic
    line is never hidden behind the oops that caused it. An OOM report becomes
    an :class:`OomKill`, not a problem (its call trace is part of it).
    """

    def __init__(self) -> None:
        self._found: list[Problem] = []
        self._open = False  # last problem's report still running (no "end trace" yet)
        self._ooms: list[OomKill] = []
        self._oom_start: int | None = None  # index of the open OOM report's first line
        self._oom_invoker: str | None = None
        self._oom_fields: dict[str, str] = {}

    def feed(self, index: int, line: str) -> None:
        """Look at console line number ``index``."""
        if self._feed_oom(index, line):
            return
        if _END_TRACE.search(line):
            self._open = False
            return
        kind = classify_line(line)
        if kind is None:
            return
        last = self._found[-1] if self._found else None
        if last is not None and kind != PANIC and self._belongs_to(last, index, kind):
            self._found[-1] = self._merge(last, index, line, kind)
            return
        self._found.append(Problem(kind=kind, line=line, index=index, start=index))
        self._open = True

    def _belongs_to(self, last: Problem, index: int, kind: str) -> bool:
        if not self._open:
            return False
        distance = index - last.start
        if last.kind == PANIC:  # the panic's own stack dump; nothing after a panic is news
            return distance <= _MERGE_WINDOW
        if _SEVERITY[kind] <= _SEVERITY[TRACE]:
            return distance <= _MERGE_WINDOW
        if _SEVERITY[last.kind] <= _SEVERITY[TRACE]:
            return distance <= 3  # "cut here" right before "WARNING: CPU:"
        return distance <= _MERGE_WINDOW_STRONG

    @staticmethod
    def _merge(last: Problem, index: int, line: str, kind: str) -> Problem:
        if _SEVERITY[last.kind] <= _SEVERITY[TRACE] < _SEVERITY[kind]:
            return Problem(kind=kind, line=line, index=index, start=last.start)
        if _SEVERITY[kind] > _SEVERITY[last.kind]:
            return Problem(kind=kind, line=last.line, index=last.index, start=last.start)
        return last

    def _feed_oom(self, index: int, line: str) -> bool:
        """Follow an OOM report; True if ``line`` belongs to one (and is no problem)."""
        if GUEST_PREFIX in line:
            return False
        m = _OOM_INVOKED.search(line)
        if m:
            self._oom_start, self._oom_invoker, self._oom_fields = index, m.group("comm"), {}
            return True
        if self._oom_start is None:
            m = _OOM_KILLED.search(line)  # a report whose start scrolled by: still an OOM kill
            if m:
                self._add_oom(index, line, m)
            return bool(m)
        if index - self._oom_start > _OOM_REPORT_LINES:
            self._oom_start = None
            return False
        m = _OOM_KILL.search(line)
        if m:
            self._oom_fields = _oom_fields(m.group("fields"))
            return True
        m = _OOM_KILLED.search(line)
        if m:
            self._add_oom(index, line, m)
            self._oom_start = None
            return True
        kind = classify_line(line)
        return kind is None or _SEVERITY[kind] <= _SEVERITY[TRACE]  # a panic inside is still a panic

    def _add_oom(self, index: int, line: str, m: re.Match[str]) -> None:
        f = self._oom_fields
        anon = m.group("anon")
        self._ooms.append(OomKill(process=m.group("comm"), pid=int(m.group("pid")), line=line, index=index,
                                  invoked_by=self._oom_invoker, constraint=f.get("constraint"),
                                  nodemask=f.get("nodemask"), mems_allowed=f.get("mems_allowed"),
                                  anon_rss_kb=int(anon) if anon else None))
        self._oom_fields, self._oom_invoker = {}, None

    def problems(self, lines: list[str]) -> list[Problem]:
        """The problems found so far, with excerpts cut from ``lines`` (all lines fed)."""
        return [with_excerpt(p, lines) for p in self._found]

    def oom_kills(self) -> list[OomKill]:
        """The OOM kills found so far."""
        return list(self._ooms)

    @property
    def count(self) -> int:
        """How many problems have been found so far."""
        return len(self._found)


def with_excerpt(problem: Problem, lines: list[str]) -> Problem:
    """``problem`` with its excerpt filled from ``lines``."""
    end = min(len(lines), problem.index + EXCERPT_AFTER + 1)
    text = "\n".join(lines[problem.start:end])
    return Problem(problem.kind, problem.line, problem.index, problem.start, text)


def find_kernel_problems(text: str) -> list[Problem]:
    """Every kernel problem in console ``text``, in order of appearance."""
    lines = [clean_line(raw) for raw in text.splitlines()]
    scanner = ProblemScanner()
    for i, line in enumerate(lines):
        scanner.feed(i, line)
    return scanner.problems(lines)


def find_oom_kills(text: str) -> list[OomKill]:
    """Every OOM kill in console ``text``, in order."""
    scanner = ProblemScanner()
    for i, raw in enumerate(text.splitlines()):
        scanner.feed(i, clean_line(raw))
    return scanner.oom_kills()


def most_severe(problems: Iterable[Problem]) -> Problem | None:
    """The first panic if any, else the first problem."""
    problems = list(problems)
    for p in problems:
        if p.kind == PANIC:
            return p
    return problems[0] if problems else None


def find_kernel_problem(text: str) -> Problem | None:
    """The kernel problem to report for console ``text`` (a panic wins), or None."""
    return most_severe(find_kernel_problems(text))


def describe_problems(problems: list[Problem]) -> tuple[str, str]:
    """(one-line message, multi-line detail) for a GuestPanic about ``problems``."""
    main = most_severe(problems)
    assert main is not None
    first = problems[0]
    message = f"guest kernel {main.kind}: {main.message_line}"
    if first is not main:
        message += f" (after {first.kind}: {first.message_line})"
    parts = [first.excerpt]
    if main is not first and main.start > first.index + EXCERPT_AFTER:
        parts += ["...", main.excerpt]
    if len(problems) > 1:
        parts.append(f"({len(problems)} kernel problem reports on the console in all)")
    return message, "\n".join(parts)


