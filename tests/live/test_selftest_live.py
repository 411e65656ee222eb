"""Kernel selftests in a real guest: `harness selftest` and the pytest collector.

tests/data/ktap holds KTAP scripts that pass, skip (exit 4), fail on purpose and nest
subtests; their verdicts depend on what the guest kernel reports (its nodes, its masks).
A kselftest target built from linux-source-6.12 runs too when
$NUMA_HARNESS_KSELFTEST_DIR points at one (e.g. mm's `migration`, built statically).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ktap_reports import junit_results

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
KTAP = REPO / "tests" / "data" / "ktap"
HARNESS = [sys.executable, "-c", "import sys; from harness.cli.main import main; sys.exit(main())"]


def run(argv: list[str], timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def test_harness_selftest_prints_the_table_and_fails_on_a_failure():
    r = run([*HARNESS, "selftest", str(KTAP), "--timeout", "120"])
    assert r.returncode == 1, r.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in r.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows["ktap/ktap_nodes.sh"] == "PASS" and rows["node1 has meminfo"] == "pass"   # numa-basic: 2 nodes
    assert rows["ktap/ktap_skip.sh"] == "SKIP"
    assert rows["ktap/ktap_fail.sh"] == "FAIL" and rows["64 nodes"] == "fail"
    assert rows["weighted interleave by"] == "todo" and rows["demotion without a target"] == "xfail"
    assert rows["node1/cpulist"] == "pass" and rows["node1"] == "pass"
    assert "expected 64 nodes, found 2" in r.stdout
    assert "2 passed, 1 skipped, 1 failed" in r.stdout
    assert "has_public_memory" in r.stdout  # the skip's reason


def test_harness_selftest_ends_a_hung_test_and_passes_exit_zero_without_failures():
    r = run([*HARNESS, "selftest", str(REPO / "tests" / "data" / "ktap-timeout"), str(KTAP / "ktap_nodes.sh"),
             "--timeout", "10", "--brief"])
    assert r.returncode == 1, r.stderr
    assert "timed out after 1" in r.stdout and "ok 1 started" in r.stderr
    r = run([*HARNESS, "selftest", str(KTAP / "ktap_nodes.sh"), str(KTAP / "ktap_skip.sh"), "--brief"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 skipped, 0 failed" in r.stdout


def test_pytest_collector_reports_each_ktap_result(tmp_path):
    xml = tmp_path / "junit.xml"
    r = run([sys.executable, "-m", "pytest", "-p", "harness.plugin.ktap", "--ktap-dir", str(KTAP),
             "--ktap-timeout", "120", f"--junitxml={xml}", "-p", "no:cacheprovider", "-q", "-rs",
             "-o", "testpaths=", str(tmp_path)], cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    # an item is FILE::FILE; a KTAP result is a subtest of it, recorded in its JUnit testcase (FILE::CASE)
    cases = junit_results(xml)
    assert cases["ktap_nodes.sh"] == ("passed", "")
    assert cases["ktap_nodes.sh::node1 has meminfo"] == ("passed", "")
    assert cases["ktap_nodes.sh::private-node masks"] == ("skipped", "SKIP")  # ktap_helpers.sh gives no reason
    assert cases["ktap_skip.sh"] == ("skipped", "no private memory nodes: the kernel has no has_public_memory mask")
    assert cases["ktap_fail.sh"][0] == "failure" and cases["ktap_fail.sh::64 nodes"][0] == "failure"
    assert cases["ktap_fail.sh::demotion without a target"] == ("passed", "")
    assert cases["ktap_nested.sh::node1/distance"] == ("passed", "")
    assert "expected 64 nodes, found 2" in r.stdout
    assert "SUBSKIPPED[private-node masks]" in r.stdout  # each result in the terminal, skips with their reasons


@pytest.mark.skipif(not os.environ.get("NUMA_HARNESS_KSELFTEST_DIR"),
                    reason="set NUMA_HARNESS_KSELFTEST_DIR to a built kselftest mm target (with `migration`)")
def test_a_kselftest_target_from_the_kernel_tree(tmp_path):
    """mm/migration built statically from linux-source-6.12: on two nodes and three vCPUs its
    cases run (on numa-basic's two vCPUs they all skip for want of threads)."""
    target = Path(os.environ["NUMA_HARNESS_KSELFTEST_DIR"])
    r = run([*HARNESS, "selftest", str(target / "migration"), "--timeout", "300",
             "--topology", str(REPO / "tests" / "data" / "topologies" / "numa-3cpu.yaml"),
             "--guest-setup", "echo 64 > /proc/sys/vm/nr_hugepages", "--save", str(tmp_path)], timeout=900)
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in r.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    for case in ("private_anon", "shared_anon", "private_anon_thp", "shared_anon_thp", "private_anon_htlb"):
        assert rows[f"migration.{case}"] == "pass", r.stdout
    # The shared hugetlb case fails on Debian's 6.12 (move_pages leaves a page behind) and
    # passes on linux-source-6.12 built with the numa and cxl fragments; the verdict follows it.
    assert (r.returncode == 0) == (rows["migration.shared_anon_htlb"] == "pass")
    assert (tmp_path / "mm" / "migration.out").read_text().startswith("TAP version 13\n1..6\n")
