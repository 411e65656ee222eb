#!/usr/bin/env python3
"""Boot-time benchmark: a harness boot against the bare-boot floor, measured in one run.

  floor:   QEMU with the same machine and kernel and a minimal initramfs whose
           /init powers off at once; wall time from spawning QEMU to its exit.
  harness: harness.boot.boot() without guest set-up or baseline state (warm
           cache: prepare, VM start) + the first guest command's result over
           SSH (``true``); wall time from the start of boot().

Runs alternate (floor, harness, floor, ...) so machine load hits both alike.
Prints medians (with min/max) and their ratio. A benchmark, not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.boot import KernelSpec, boot, prepare
from harness.guest.protocol import MILESTONE_INIT
from harness.image.build import build_bare_initramfs
from harness.qemu.bootargs import bare_argv

TARGET_RATIO = 1.25


def bare_boot(qemu: str, machine_argv: list[str], kernel: Path, initrd: Path, timeout: float = 180) -> float:
    with tempfile.TemporaryDirectory(prefix="nh-bench-") as d:
        argv = bare_argv(qemu, machine_argv, kernel=kernel, initrd=initrd, append="console=ttyS0 panic=-1",
                         console_log=Path(d, "console.log"))
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bare boot failed ({proc.returncode}): {proc.stderr.read().decode()[-500:]}")
        if MILESTONE_INIT not in Path(d, "console.log").read_text(errors="replace"):
            raise SystemExit("bare boot exited without its init running; not a valid floor")
        return elapsed


def harness_boot(topology: str, kspec: KernelSpec, accel: str | None) -> float:
    t0 = time.monotonic()
    # the boot alone: no guest set-up, no baseline state (numa-basic has no set-up anyway)
    with boot(topology, kernel=kspec, accel=accel, setup=False, baseline=False) as m:
        result = m.run("true", timeout=60, check=False)
        elapsed = time.monotonic() - t0
        if result.exit_status != 0:
            raise SystemExit("first guest command failed")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default="numa-basic")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel")
    ap.add_argument("--modules")
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"])
    args = ap.parse_args()
    out = Console()
    kspec = KernelSpec.from_env(args.kernel, args.modules)
    p = prepare(args.topology, kernel=kspec, accel=args.accel)  # warms every cache
    bare = build_bare_initramfs()
    out.print(f"topology {args.topology}, kernel {p.kernel.origin}, accel {p.accel.accel}, {args.runs} runs each")
    floor, full = [], []
    for i in range(args.runs):
        floor.append(bare_boot(p.qemu, p.spec.machine_argv, p.kernel.image, bare))
        full.append(harness_boot(args.topology, kspec, args.accel))
        out.print(f"  run {i + 1}: floor {floor[-1]:.2f} s, harness {full[-1]:.2f} s")
    table = Table(title="boot to first guest command", title_justify="left")
    for c in ("", "median s", "min s", "max s"):
        table.add_column(c, justify="right")
    for label, xs in (("bare boot (floor)", floor), ("harness boot", full)):
        table.add_row(label, f"{statistics.median(xs):.2f}", f"{min(xs):.2f}", f"{max(xs):.2f}")
    out.print(table)
    ratio = statistics.median(full) / statistics.median(floor)
    out.print(f"ratio harness/floor: [bold]{ratio:.2f}[/bold] (target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
