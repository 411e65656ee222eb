#!/usr/bin/env python3
"""Record real snapshot output for the parsers' unit tests (tests/unit/data/stats/).

Boots each topology under TCG, applies its guest set-up, starts a small process holding
4 MB on node 1 inside a memory cgroup (so ``numa_maps`` and ``memory.numa_stat`` have
content), takes one snapshot with every option on, and saves the raw text as
``<topology>.txt``. Also times five snapshot round trips (median) and prints it: a
benchmark line, not an assertion. Run it by hand after changing snapshot.sh.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness.boot import boot
from harness.stats.collect import collect

OUT = Path(__file__).resolve().parent.parent / "tests" / "unit" / "data" / "stats"

HOLDER = Path(__file__).resolve().parent / "stats-fixture-holder.sh"


def record(topology: str) -> None:
    with boot(topology, accel="tcg", baseline=False) as vm:
        pid = int(vm.run(HOLDER.read_text(), timeout=120, check=True).stdout.split()[0])
        text = collect(vm, pid=pid, cgroup="rec", cxl=True, daxctl=True)
        (OUT / f"{topology}.txt").write_text(text)
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            collect(vm)
            times.append(time.monotonic() - t0)
        print(f"{topology}: {len(text.splitlines())} lines; snapshot round trip median "
              f"{statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("topologies", nargs="*", default=["memory-only", "tiered-3", "cxl-single"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for t in args.topologies:
        record(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
