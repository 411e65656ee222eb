#!/usr/bin/env python3
"""``make test``'s kernel matrix: the whole test suite on the default kernel, then the stock-kernel
suite (``guest-tests/``) again on each further kernel (``debian:7.2``), one pytest run per kernel.

Each run's output streams through as pytest prints it. At the end, one line per kernel: the
kernel, its pytest summary and its wall time; then, as the closing line, every run's counts
added up in pytest's own summary format (``==== 1046 passed, 94 skipped in 2400.00s (all
kernels) ====``), so whatever reads the last line of the log counts the tests of every kernel.
Exits with the first non-zero pytest status.

  scripts/kernel_matrix.py [--kernel NAME]... [-- PYTEST_ARGS...]

A kernel is anything ``pytest --nh-kernel`` takes (``debian:7.2``, a bzImage, a build tree); it is
fetched and cached on first use. PYTEST_ARGS (``-k tiered-3``, ``--durations=25``) go to every run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: pytest's closing line: ``==== 56 passed, 2 skipped in 312.40s (0:05:12) ====``.
SUMMARY_RE = re.compile(r"^=+ (.* in [\d.]+s.*) =+$")
#: one count of a summary line: ``56 passed``, ``2 skipped``, ``1 error``.
COUNT_RE = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|subtests? \w+)")
#: the order pytest prints its counts in
ORDER = ("failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "warnings", "errors")


@dataclass
class Leg:
    label: str              # what ran, on which kernel
    argv: list[str]
    kernel: str | None      # the --kernel it ran with (None: the default, or $NUMA_HARNESS_KERNEL)
    status: int = 0
    summary: str = ""       # pytest's summary line, as printed
    release: str = ""       # the kernel release the plugin booted
    seconds: float = 0.0


def fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s:02d} s"


def release_of(kernel: str | None) -> str:
    """The release of a kernel, fetching it into the cache first if it is not there (so a fresh
    clone fetches ``debian:7.2`` here, saying so); "" if it cannot be had (pytest then says why)."""
    from harness.boot.prepare import KernelSpec, resolve_kernel
    from harness.errors import HarnessError

    try:
        return resolve_kernel(KernelSpec.from_env(kernel), progress=lambda m: print(m, flush=True)).release
    except HarnessError:
        return ""


def totals(legs: list[Leg]) -> str:
    """Every leg's counts added up, as one pytest summary line (with every leg's wall time)."""
    counts: dict[str, int] = {}
    for leg in legs:
        for n, word in COUNT_RE.findall(leg.summary):
            word = {"error": "errors", "warning": "warnings"}.get(word, word)
            counts[word] = counts.get(word, 0) + int(n)
    if not any(leg.status for leg in legs) and not counts:
        counts["passed"] = 0
    if any(leg.status and not leg.summary for leg in legs):  # a run that ended without a summary
        counts["errors"] = counts.get("errors", 0) + sum(1 for leg in legs if leg.status and not leg.summary)
    words = sorted(counts, key=lambda w: ORDER.index(w) if w in ORDER else len(ORDER))
    seconds = sum(leg.seconds for leg in legs)
    def said(w: str) -> str:  # pytest's words: "1 error", "2 errors"
        return w[:-1] if counts[w] == 1 and w in ("errors", "warnings") else w
    return (f"==== {', '.join(f'{counts[w]} {said(w)}' for w in words)} in {seconds:.2f}s "
            f"({fmt(seconds)}, all kernels) ====")


def run(leg: Leg, release: Callable[[str | None], str] = release_of) -> None:
    """Run one pytest, echoing its output line by line; note its summary, kernel and wall time."""
    t0 = time.monotonic()
    leg.release = release(leg.kernel)
    print(f"\n### kernel matrix: {leg.label} ({leg.release or 'kernel not available'}): {' '.join(leg.argv)}",
          flush=True)
    with subprocess.Popen(leg.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            text = line.strip()
            if SUMMARY_RE.match(text):
                leg.summary = text
        leg.status = proc.wait()
    leg.seconds = time.monotonic() - t0


def main(argv: list[str] | None = None, release: Callable[[str | None], str] = release_of) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=[], metavar="NAME",
                    help="a further kernel for guest-tests (repeatable), e.g. debian:7.2")
    ap.add_argument("--pytest", default=str(Path(sys.executable).with_name("pytest")), help="the pytest to run")
    ap.add_argument("--suite", default="guest-tests", help="what runs on the further kernels (default guest-tests)")
    ap.add_argument("pytest_args", nargs="*", help="arguments for every pytest run (after --)")
    args = ap.parse_args(argv)
    legs = [Leg("default kernel: every test", [args.pytest, *args.pytest_args], None)]
    legs += [Leg(f"{k}: {args.suite}", [args.pytest, args.suite, "--nh-kernel", k, *args.pytest_args], k)
             for k in args.kernel]
    for leg in legs:
        run(leg, release)
    print("\n### kernel matrix", flush=True)
    for leg in legs:
        kernel = f" ({leg.release})" if leg.release else ""
        print(f"{leg.label}{kernel}: {leg.summary or f'pytest exited {leg.status}'}; wall time {fmt(leg.seconds)}")
    failed = [leg for leg in legs if leg.status != 0]
    print(totals(legs), flush=True)
    return failed[0].status if failed else 0


if __name__ == "__main__":
    sys.exit(main())
