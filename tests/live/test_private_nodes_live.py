"""The private-node series kernel, booted: the harness's module makes private nodes through the
series' own API, and the contract report runs on them.

Needs a kernel built with the series (``CONFIG_CRAM=y``): ``$NUMA_HARNESS_SERIES_KERNEL`` (a build
directory), else the newest such build in the harness cache (``harness kernel build --apply``).
Without one every test here skips, saying how to build it. The module is built against that
tree on first use (cached). The recorded outputs of these runs are unit-test data
(``tests/unit/data/series-v4/``), so the verdict logic is checked on this kernel in every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.errors import KernelError
from harness.kernel.build import SERIES_BUILD_HINT, find_series_kernel
from harness.units import IdList

pytestmark = [pytest.mark.live, pytest.mark.timeout(1800)]

HARNESS = [sys.executable, "-c", "import sys; from harness.cli.main import main; sys.exit(main())"]
try:
    SERIES = find_series_kernel()
    WHY = f"no kernel with the private-node series: {SERIES_BUILD_HINT}"
except KernelError as e:
    SERIES, WHY = None, str(e)
needs_series = pytest.mark.skipif(SERIES is None, reason=WHY)
NODES = "/sys/devices/system/node"


def run(argv: list[str], timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMA_HARNESS_KERNEL", "NUMA_HARNESS_MODULES")}
    env["COLUMNS"] = "200"
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


@needs_series
@pytest.mark.parametrize("preset, node, in_has_memory, said", [
    # MEMPOLICY puts the node in has_memory (drivers/base/node.c of the series: has_memory lists
    # N_MEMORY and the private nodes that opted into mempolicy); without it only has_private_memory
    ("private-mempolicy", 2, True, "node_private_set_ops(node 2, flags 0x3) = 0"),
    ("private-none", 1, False, "node_private_set_ops(node 1, flags 0x0) = 0"),
    ("private-cram", 1, False, "cram_register_private_node(node 1) = 0"),
])
def test_the_module_makes_a_private_node_through_the_series_api(preset, node, in_has_memory, said):
    cmd = (f"cat {NODES}/has_private_memory {NODES}/has_memory; echo ---; "
           "dmesg | grep numa_harness_private")
    r = run([*HARNESS, "run", preset, "--kernel-tree", str(SERIES), "--", cmd])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    masks, _, log = r.stdout.partition("---")
    private, memory = (ln.strip() for ln in masks.strip().splitlines()[:2])
    assert private == str(node), r.stdout
    assert (node in IdList.parse(memory, "has_memory")) == in_has_memory, r.stdout
    assert f"add_private_memory_driver_managed(node {node}" in log and said in log, log


@needs_series
def test_contract_report_on_the_series_kernel(tmp_path):
    out = tmp_path / "report.md"
    r = run([*HARNESS, "contract-report", "--kernel-tree", str(SERIES), "--topology", "private-mempolicy",
             "--out", str(out)], timeout=1700)
    data = json.loads(out.with_suffix(".json").read_text())
    (section,) = data["sections"]
    assert section["error"] is None, section["error"]
    got = {(v["promise"], v["role"]): v["outcome"] for v in section["verdicts"]}
    assert got[("discovery.mask", "private")] == "pass"
    for promise in ("isolation.anon", "isolation.pagecache", "discovery.fallback"):
        assert got[(promise, "private")] == "pass", (promise, r.stdout[-2000:])
        assert got[(promise, "control")] == "xfail", (promise, r.stdout[-2000:])
    assert got[("mempolicy.mbind", "private")] == "pass" and got[("migration.move_pages", "private")] == "pass"
