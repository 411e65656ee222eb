"""Which kernel reports a test provoked on purpose, and which fail it (pure).

Kernel problems (WARN, BUG, oops, call trace) come from the console as
:class:`~harness.vm.problems.Problem`; OOM kills are their own records
(:class:`~harness.vm.problems.OomKill`), never problems. A test names what it
expects with ``@pytest.mark.expect_kernel_problem(kind)``, kind ``oom`` or a
problem kind (``warning``, ``bug``, ``oops``, ``call-trace``, ``allocation-failure``).

Page allocation failures in a test that saw an OOM kill belong to the kill (the victim's own
allocations fail while it dies, and the kernel reports each one, ``warn_alloc``): they are
expected with it, and reported as it.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.vm.problems import ALLOC_FAILURE, OomKill, Problem

OOM = "oom"


def unexpected_problems(problems: Iterable[Problem], oom_kills: Iterable[OomKill], expected: set[str], *,
                        strict: bool = True) -> str | None:
    """Why a test with these new console reports fails, or None.

    A problem or OOM kill of a kind not ``expected`` fails the test; with
    ``strict``, so does an expected kind that never appeared.
    """
    problems, oom_kills = list(problems), list(oom_kills)
    # the OOM victim's own failing allocations are part of the OOM kill, reported (or expected) as one
    accepted = set(expected) | ({ALLOC_FAILURE} if oom_kills or OOM in expected else set())
    bad = [p for p in problems if p.kind not in accepted]
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
