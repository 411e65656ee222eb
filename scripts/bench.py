#!/usr/bin/env python3
"""The harness's benchmarks in one run (``make bench``): medians of several runs, ratios from this run.

  boot      a harness boot to its first command's result, against the bare-boot floor
            (scripts/bench_boot.py; runs alternate so machine load hits both alike)
  restore   a fresh machine restored from its snapshot (``fresh_vm``) to its first command's
            result, against the harness boot; the snapshot is taken first if not cached
  round     a warm ``true`` on the command channel against an exec channel per command, and a
            statistics snapshot (which takes the channel)
  cli       ``harness --version`` and ``harness ssh NAME -- true`` against a running VM
  xdist     the wall time of ``pytest -n 1`` and ``-n 2`` on a fixed subset of guest-tests
            (one run each: minutes; ``--skip-xdist`` leaves it out)

A benchmark, not a test: it asserts nothing. The targets it prints are the project's goals.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_boot import bare_boot, harness_boot
from rich.console import Console
from rich.table import Table

from harness.boot import KernelSpec, prepare
from harness.boot.snapshot import restore, snapshot_blocker, snapshot_for
from harness.image.build import build_bare_initramfs
from harness.paths import state_dir
from harness.stats import snapshot

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [str(Path(sys.executable).with_name("harness"))]  # the console script a user runs
#: Two light topologies, two tests each: what -n 2 can split.
XDIST_SUBSET = ["guest-tests/test_fidelity.py", "-k", "numa-basic or memory-only"]
TARGETS = {"boot/floor": "<= 1.2", "restore": "<= 1 s", "round trip": "<= 40 ms", "--version": "<= 0.15 s",
           "ssh": "<= 0.3 s"}


def timed(argv: list[str], **kw) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600, **kw)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return elapsed


def row(table: Table, label: str, xs: list[float], unit: str = "s", scale: float = 1.0) -> None:
    table.add_row(label, f"{statistics.median(xs) * scale:.3g} {unit}", f"{min(xs) * scale:.3g}",
                  f"{max(xs) * scale:.3g}", str(len(xs)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default="numa-basic")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--round-trips", type=int, default=50)
    ap.add_argument("--kernel")
    ap.add_argument("--modules")
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"])
    ap.add_argument("--skip-xdist", action="store_true", help="leave out the pytest -n 1 / -n 2 runs")
    args = ap.parse_args()
    out = Console()
    kspec = KernelSpec.from_env(args.kernel, args.modules)
    p = prepare(args.topology, kernel=kspec, accel=args.accel)  # warms every cache
    load = os.getloadavg()[0]
    out.print(f"topology {args.topology}, kernel {p.kernel.origin}, accel {p.accel.accel}, {args.runs} runs each, "
              f"{os.cpu_count()} CPUs, load average {load:.1f} at the start")
    table = Table(title="numa-harness benchmarks", title_justify="left")
    for c in ("", "median", "min", "max", "runs"):
        table.add_column(c, justify="right")
    ratios: list[tuple[str, float, str]] = []

    # -- boot vs floor, restore vs boot ------------------------------------------------------
    blocked = snapshot_blocker(p)
    snap = None
    if blocked is None:
        t0 = time.monotonic()
        snap = snapshot_for(p, say=out.print)
        out.print(f"snapshot ready in {time.monotonic() - t0:.1f} s ({snap.directory})")
    else:
        out.print(f"no restore figures: {blocked}")
    bare = build_bare_initramfs()
    floor, full, back = [], [], []
    for i in range(args.runs):
        floor.append(bare_boot(p.qemu, p.spec.machine_argv, p.kernel.image, bare))
        full.append(harness_boot(args.topology, kspec, args.accel))
        if snap is not None:
            t0 = time.monotonic()
            with restore(p, snap) as m:
                m.run("true", timeout=60)
                back.append(time.monotonic() - t0)
        out.print(f"  run {i + 1}: floor {floor[-1]:.2f} s, boot {full[-1]:.2f} s"
                  + (f", restore {back[-1]:.2f} s" if back else ""))
    row(table, "bare boot (floor)", floor)
    row(table, "harness boot to first command", full)
    ratios.append(("boot / floor", statistics.median(full) / statistics.median(floor), TARGETS["boot/floor"]))
    if back:
        row(table, "restore to first command", back)
        ratios.append(("restore / boot", statistics.median(back) / statistics.median(full),
                       f"restore {TARGETS['restore']}"))

    # -- warm round trips and the CLI, on one machine ----------------------------------------
    machine = restore(p, snap) if snap is not None else None
    if machine is None:
        from harness.boot import boot
        machine = boot(args.topology, kernel=kspec, accel=args.accel, setup=False, baseline=False)
    name = f"bench-{os.getpid()}"
    vmdir = state_dir() / name
    try:
        trips: dict[str, list[float]] = {"channel": [], "exec": []}
        for via in ("channel", "exec"):
            machine.vm.run("true", via=via, timeout=30)  # warm
        # in blocks, not interleaved: an exec channel's teardown (dropbear's child exiting) goes on
        # in the guest after its exit status came, and would land on the next command measured
        for _ in range(2):
            for via in ("channel", "exec"):
                for _ in range(args.round_trips // 2):
                    t0 = time.perf_counter()
                    machine.vm.run("true", via=via, timeout=30)
                    trips[via].append(time.perf_counter() - t0)
        stats = []
        for _ in range(max(5, args.round_trips // 5)):
            t0 = time.perf_counter()
            snapshot(machine)
            stats.append(time.perf_counter() - t0)
        row(table, "warm round trip, command channel", trips["channel"], "ms", 1000)
        row(table, "warm round trip, exec channel", trips["exec"], "ms", 1000)
        row(table, "statistics snapshot", stats, "ms", 1000)
        ratios.append(("round trip exec / channel",
                       statistics.median(trips["exec"]) / statistics.median(trips["channel"]),
                       f"channel {TARGETS['round trip']}"))
        machine.vm.write_state(vmdir)  # `harness ssh NAME` finds it like a background VM
        version = [timed([*HARNESS, "--version"]) for _ in range(args.runs)]
        ssh = [timed([*HARNESS, "ssh", name, "--", "true"]) for _ in range(args.runs)]
        row(table, "harness --version", version)
        row(table, "harness ssh NAME -- true", ssh)
    finally:
        machine.shutdown()
        shutil.rmtree(vmdir, ignore_errors=True)

    # -- pytest -n 1 vs -n 2 ------------------------------------------------------------------
    if not args.skip_xdist:
        walls = {}
        for n in (1, 2):
            argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", str(n), *XDIST_SUBSET]
            if args.kernel:
                argv += ["--kernel", args.kernel]
            walls[n] = timed(argv, cwd=ROOT)
            out.print(f"  pytest -n {n} {' '.join(XDIST_SUBSET)}: {walls[n]:.1f} s")
        table.add_row("pytest -n 1, fixed subset (4 tests, 2 topologies)", f"{walls[1]:.1f} s", "", "", "1")
        table.add_row("pytest -n 2, same subset", f"{walls[2]:.1f} s", "", "", "1")
        ratios.append(("pytest -n 1 / -n 2", walls[1] / walls[2], f"> 1 on {os.cpu_count()} CPUs"))

    out.print(table)
    for label, value, target in ratios:
        out.print(f"{label}: [bold]{value:.2f}[/bold]  (target: {target})")
    out.print(f"targets: CLI --version {TARGETS['--version']}, ssh {TARGETS['ssh']}; "
              f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
