#!/usr/bin/env python3
"""Record what the private-node series kernel does, as unit-test data.

Needs a series build (``$NUMA_HARNESS_SERIES_KERNEL`` or one in the cache, see
``harness.kernel.build.find_series_kernel``). For each of ``private-mempolicy``,
``private-none`` and ``private-cram`` it boots the kernel, provisions the private node through
the harness's module, and saves the node masks and the module's kernel-log lines
(``tests/unit/data/series-v4/<preset>-boot.txt``); then runs ``harness contract-report --record``
on the three (the guest conversations and the report go to ``tests/unit/data/contract-replay/``,
which ``tests/unit/test_contract_replay.py`` replays) and ``harness compare-isolation
private-mempolicy --json`` (``series-v4/compare-isolation.json``). Run it by hand; minutes per
preset under TCG.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.kernel.build import SERIES_BUILD_HINT, find_series_kernel

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "unit" / "data"
PRESETS = ("private-mempolicy", "private-none", "private-cram")
HARNESS = [sys.executable, "-m", "harness.cli"]
SHOW = ("cd /sys/devices/system/node && for m in possible online has_cpu has_memory has_normal_memory "
        "has_private_memory; do echo \"$m $(cat $m 2>/dev/null)\"; done; "
        "for n in node*; do echo \"$n $(grep MemTotal $n/meminfo)\"; done; echo '--- dmesg'; "
        "dmesg | grep -E 'numa_harness_private|Demotion targets|Fallback order|WARNING|BUG|Oops'")


def main() -> int:
    tree = find_series_kernel()
    if tree is None:
        print(f"no series kernel: {SERIES_BUILD_HINT}", file=sys.stderr)
        return 2
    (DATA / "series-v4").mkdir(exist_ok=True)
    for preset in PRESETS:
        r = subprocess.run([*HARNESS, "run", preset, "--kernel-tree", str(tree), "--", SHOW], capture_output=True,
                           text=True, timeout=1200)
        (DATA / "series-v4" / f"{preset}-boot.txt").write_text(f"$ harness run {preset} -- ...\n{r.stdout}")
        print(preset, "exit", r.returncode, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.md"
        argv = [*HARNESS, "contract-report", "--kernel-tree", str(tree), "--out", str(out), "--record", tmp]
        for preset in PRESETS:
            argv += ["--topology", preset]
        subprocess.run(argv, timeout=7200)
        report = json.loads(out.with_suffix(".json").read_text())
        shutil.copy(out, DATA / "series-v4" / "contract-report.md")
        for section in report["sections"]:
            name = f"series-v4-{section['topology']}"
            shutil.copy(Path(tmp) / f"{section['topology']}.json.gz", DATA / "contract-replay" / f"{name}.guest.json.gz")
            (DATA / "contract-replay" / f"{name}.verdicts.json").write_text(
                json.dumps({"sections": [section]}, indent=1) + "\n")
    r = subprocess.run([*HARNESS, "compare-isolation", "private-mempolicy", "--kernel-tree", str(tree), "--json"],
                       capture_output=True, text=True, timeout=3600)
    (DATA / "series-v4" / "compare-isolation.json").write_text(r.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
