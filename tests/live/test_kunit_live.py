"""KUnit in a real guest: `harness selftest --kunit` and `pytest --kunit`.

Needs a kernel built with the `kunit` fragment:
``NUMA_HARNESS_KUNIT_KERNEL=<build dir>`` (``harness kernel build --src KSRC --fragment numa
--fragment cxl --fragment kunit``). The suites' verdicts are the guest kernel's: the built-in
suites ran at boot, KUnit's example and SLUB's suites run when their modules load, and
tests/data/kunit/nh_kunit_nodes.c, built out of tree against that kernel, checks the
guest's NUMA nodes (one case fails on purpose, one skips, one runs per node).
Without that variable only the check of a kernel without KUnit (Debian's) runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ktap_reports import junit_results

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "tests" / "data" / "kunit"
HARNESS = [sys.executable, "-c", "import sys; from harness.cli.main import main; sys.exit(main())"]
KERNEL = os.environ.get("NUMA_HARNESS_KUNIT_KERNEL")
needs_kunit_kernel = pytest.mark.skipif(
    not KERNEL, reason="set NUMA_HARNESS_KUNIT_KERNEL to a build dir made with --fragment kunit")


def run(argv: list[str], timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMA_HARNESS_KERNEL", "NUMA_HARNESS_MODULES")}
    env["COLUMNS"] = "200"  # table cells on one line each
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd,
                          env=env)


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """The table's rows: first column -> (result, reason)."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if line.startswith("│") and len(cells) >= 5 and cells[1]:
            out[cells[1]] = (cells[2], cells[4])
    return out


@pytest.fixture(scope="module")
def demo_module(tmp_path_factory) -> Path:
    """tests/data/kunit/nh_kunit_nodes.c built against the KUnit kernel (make M=)."""
    assert KERNEL
    d = tmp_path_factory.mktemp("kunit-demo")
    for f in ("nh_kunit_nodes.c", "Kbuild"):
        shutil.copy(DEMO / f, d / f)
    r = subprocess.run(["make", "-C", KERNEL, f"M={d}", "modules"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d / "nh_kunit_nodes.ko"


@needs_kunit_kernel
def test_harness_selftest_kunit_reports_suites_and_cases(demo_module):
    r = run([*HARNESS, "selftest", "--kunit", "--kernel-tree", str(KERNEL), "--kunit-module", "kunit-example-test",
             "--kunit-module", "slub_kunit", "--kunit-module", str(demo_module)])
    assert r.returncode == 1, r.stdout + r.stderr   # nh_nodes fails on purpose
    got = rows(r.stdout)
    # built in, run at boot
    for suite in ("damon", "damon-operations", "resource", "cpumask"):
        assert got[f"kunit/{suite}"][0] == "PASS", r.stdout
    assert got["damon_test_regions"][0] == "pass"
    # modules, run as they loaded
    assert got["kunit/example"][0] == "PASS" and got["kunit/slub_test"][0] == "PASS", r.stdout
    assert got["example_skip_test"] == ("skip", "this test should be skipped")
    assert got["test_clobber_zone"][0] == "pass"
    # the out-of-tree module: verdicts from the guest's two nodes
    assert got["kunit/nh_nodes"] == ("FAIL", "1 failed: nh_sixty_four_nodes")
    assert got["nh_two_nodes_online"][0] == "pass"
    assert got["nh_sixty_four_nodes"][0] == "fail"
    assert "num_node_state(N_ONLINE) == 2" in r.stderr   # KUnit's own detail, in the failure's output
    assert got["nh_memory_only_node"] == ("skip", "no memory-only node in this topology")
    assert got["nh_node_has_cpus/node0"][0] == "pass" and got["nh_node_has_cpus/node1"][0] == "pass"


@needs_kunit_kernel
def test_suite_globs_and_a_glob_that_matches_nothing():
    r = run([*HARNESS, "selftest", "--kunit", "--kernel-tree", str(KERNEL), "--brief", "damon*", "nomatch*"])
    assert r.returncode == 1, r.stdout + r.stderr
    got = rows(r.stdout)
    assert got["kunit/damon"][0] == "PASS" and got["kunit/damon-operations"][0] == "PASS"
    assert "kunit/cpumask" not in got
    assert got["kunit/nomatch*"][0] == "FAIL"
    assert "no KUnit suite matches 'nomatch*'" in r.stdout and "cpumask" in r.stdout  # lists what there is
    assert "1 failed" in r.stdout


@needs_kunit_kernel
def test_pytest_kunit_reports_each_suite_and_case(tmp_path):
    xml = tmp_path / "junit.xml"
    r = run([sys.executable, "-m", "pytest", "--kernel-tree", str(KERNEL), "--kunit", "--kunit-suite", "damon*",
             "--kunit-suite", "example", "--kunit-module", "kunit-example-test", f"--junitxml={xml}",
             "-p", "no:cacheprovider", "-q", "-rs", "-o", "testpaths=", str(tmp_path)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # an item is kunit[GLOB]; each suite and case is a subtest of it, recorded in its JUnit testcase
    cases = junit_results(xml)
    names = {k.rsplit("::", 1)[-1] if "::" in k else k for k in cases}
    assert {"kunit[damon*]", "kunit[example]", "damon", "damon-operations", "example"} <= names, cases
    assert any(k.endswith("example/example_skip_test") and v == ("skipped", "this test should be skipped")
               for k, v in cases.items()), cases
    assert any(k.endswith("damon/damon_test_regions") and v[0] == "passed" for k, v in cases.items()), cases


def test_a_kernel_without_kunit_is_one_line_naming_config_kunit():
    """Debian's default kernel: refused from its .config before any boot."""
    r = run([*HARNESS, "selftest", "--kunit"], timeout=300)
    assert r.returncode == 125, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and "CONFIG_KUNIT is not set" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "booting" not in r.stderr
