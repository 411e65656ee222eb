"""Which kernel reports a test provoked on purpose, and which fail it (pure).

Kernel problems (WARN, BUG, oops, call trace) come from the console as
:class:`~harness.vm.problems.Problem`; OOM kills are their own records
(:class:`~harness.vm.problems.OomKill`), never problems. A test names what it
expects with ``@pytest.mark.expect_kernel_problem(kind)``, kind ``oom`` or a
problem kind (``warning``, ``bug``, ``oops``, ``call-trace``).
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.vm.problems import OomKill, Problem

OOM = "oom"


def unexpected_problems(problems: Iterable[Problem], oom_kills: Iterable[OomKill], expected: set[str], *,
                        strict: bool = True) -> str | None:
    """Why a test with these new console reports fails, or None.

    A problem or OOM kill of a kind not ``expected`` fails the test; with
    ``strict``, so does an expected kind that never appeared.
    """
    problems, oom_kills = list(problems), list(oom_kills)
    bad = [p for p in problems if p.kind not in expected]
    if bad:
        p = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return f"guest kernel problem ({p.kind}) during the test: {p.message_line}{more}\n{p.excerpt}"
    if oom_kills and OOM not in expected:
        k = oom_kills[0]
        return (f"guest kernel OOM kill during the test: {k.describe()}\n{k.message_line}\n"
                "(mark the test @pytest.mark.expect_kernel_problem('oom') if it provokes one on purpose)")
    if strict:
        seen = {p.kind for p in problems} | ({OOM} if oom_kills else set())
        missing = sorted(expected - seen)
        if missing:
            return f"the test expected a kernel {', '.join(missing)} report, and the guest printed none"
    return None
