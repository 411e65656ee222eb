"""Which kernel problems a test provoked on purpose, and which fail it (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from harness.vm.console import Problem

OOM = "oom"
#: Lines that make a console problem report an OOM kill (its call trace is the OOM killer's own).
_OOM_MARKERS = ("invoked oom-killer", "Out of memory: Killed process", "oom-kill:", "Memory cgroup out of memory")


def problem_kind(p: Problem) -> str:
    """``oom`` for an OOM-killer report, else the console classifier's kind (``warning``, ``bug`` ...)."""
    text = f"{p.line}\n{p.excerpt}"
    if p.kind != "panic" and any(m in text for m in _OOM_MARKERS):
        return OOM
    return p.kind


def unexpected_problems(problems: Iterable[Problem], expected: set[str], *, strict: bool = True) -> str | None:
    """Why a test with these new console problems fails, or None.

    A problem whose kind is not ``expected`` fails the test; with ``strict``,
    so does an expected kind that never appeared.
    """
    problems = list(problems)
    kinds = [problem_kind(p) for p in problems]
    bad = [(k, p) for k, p in zip(kinds, problems) if k not in expected]
    if bad:
        k, p = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return f"guest kernel problem ({k}) during the test: {p.message_line}{more}\n{p.excerpt}"
    if strict:
        missing = sorted(expected - set(kinds))
        if missing:
            return f"the test expected a kernel {', '.join(missing)} report, and the guest printed none"
    return None
