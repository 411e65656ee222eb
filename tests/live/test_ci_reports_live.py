"""What a nightly CI run keeps of a failure, on a real guest: a test that fails on purpose (a wrong
page count) gives JUnit with the machine's properties and the diagnostics in its failure text, a
bundle whose ``reproduce.sh`` fails the same way again, and an HTML page with a plot of memory per
node from ``stats.timeline``. The plugin runs in a pytest subprocess, as a user's suite runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

TESTS = """
    import time

    import pytest

    from harness.guest import workloads

    pytestmark = pytest.mark.topology("numa-basic")

    def test_wrong_count(vm, guest, stats):
        vm.run("echo nightly-probe-line > /dev/kmsg")
        r = guest.place(16, policy="bind", nodes=[1])
        assert r.placement.on(1) == 4097, "deliberately wrong: 16 MiB is 4096 pages"

    def test_timeline_of_a_bound_allocation(vm, guest, stats):
        with stats.timeline(0.3, label="64 MiB bound to node 1") as tl:
            started = guest.start(workloads.place(64, policy="bind", nodes=[1], hold_until_signal=True))
            time.sleep(1.5)  # held: a few samples of the plateau
            guest.stop(started.pid)
        assert tl.nodes() == [0, 1] and len(tl.used_kb(1)) >= 2
        # Node 1's "used" (MemTotal - MemFree) moves by some MiB on its own: pages the previous
        # test's program freed sit on per-CPU free lists, count as used, and this allocation takes
        # them first (one fresh-clone run: first sample 87 MB, lowest 79 MB, peak 135 MB for 64 MiB).
        # The plateau must still stand out: at least 3/4 of the allocation above the lowest sample.
        lowest = min(kb for _, kb in tl.used_kb(1))
        assert tl.peak_kb(1) - lowest >= 48 * 1024, tl.used_kb(1)
"""


def run_pytest(folder: Path, *args: str, timeout: float = 700) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=folder,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_a_failure_gives_junit_diagnostics_a_bundle_that_reproduces_it_and_a_report_with_a_plot(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_deliberate.py").write_text(textwrap.dedent(TESTS))
    junit, html, artifacts = tmp_path / "junit.xml", tmp_path / "report.html", tmp_path / "artifacts"
    r = run_pytest(suite, "--accel", "tcg", f"--junitxml={junit}", "--html-report", str(html),
                   "--artifacts", str(artifacts))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"\b1 failed, 1 passed\b", out), out

    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    failed = cases["test_wrong_count"]
    props = {p.get("name"): p.get("value") for p in failed.iter("property")}
    assert props["topology"] == "numa-basic" and props["accel"] == "tcg"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", props["kernel_release"]), props
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["qemu_version"]) and float(props["boot_seconds"]) > 0, props
    assert {p.get("name") for p in cases["test_timeline_of_a_bound_allocation"].iter("property")} >= set(props)
    text = failed.find("failure").text or ""
    assert "4097" in text
    assert "numa-harness: console tail" in text and "numa-harness: statistics delta since the test began" in text
    dmesg = text.split("numa-harness: guest dmesg since the test began", 1)[1]
    assert "nightly-probe-line" in dmesg

    (bundle,) = artifacts.iterdir()
    assert f"(console log: {bundle / 'console.log'})" in text  # the report names a file that stays
    names = {p.name for p in bundle.iterdir()}
    assert {"qemu-argv.json", "topology.yaml", "kernel.config", "console.log", "dmesg.txt", "dmesg-since-test.txt",
            "stats-before.json", "stats-after.json", "workloads.json", "reproduce.sh", "failure.txt",
            "bundle.json"} <= names, names
    assert "qemu-system" in json.loads((bundle / "qemu-argv.json").read_text())[0]
    assert "Linux version" in (bundle / "console.log").read_text()
    assert "CONFIG_NUMA=y" in (bundle / "kernel.config").read_text()
    before = json.loads((bundle / "stats-before.json").read_text())
    after = json.loads((bundle / "stats-after.json").read_text())
    hit = "numa_hit"
    assert after["nodes"]["1"]["numastat"][hit] - before["nodes"]["1"]["numastat"][hit] >= 4096
    (ran,) = json.loads((bundle / "workloads.json").read_text())
    assert "place" in ran["command"] and ran["exit_status"] == 0 and ran["stdout"].lstrip().startswith("{")

    page = html.read_text()
    assert page.count("data:image/png;base64,") == 1 and "64 MiB bound to node 1" in page
    assert "test_wrong_count" in page and "failed" in page

    # reproduce.sh boots the same machine and kernel and fails the same way
    rep = subprocess.run(["sh", str(bundle / "reproduce.sh"), "-p", "no:cacheprovider", "--artifacts",
                          str(tmp_path / "again")], capture_output=True, text=True, timeout=700)
    again = rep.stdout + rep.stderr
    assert rep.returncode == 1, again
    assert "1 failed" in again and "4097" in again and "test_wrong_count" in again
    assert "test_timeline" not in again  # only the failed test


KTAP_SCRIPT = """#!/bin/sh
# numa-harness: topology=numa-basic
echo "KTAP version 1"
echo "1..3"
echo "ok 1 first"
echo "not ok 2 second"
echo "ok 3 third # SKIP nothing to test"
exit 1
"""


def test_each_ktap_result_is_a_junit_test_case_of_its_own(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    script = suite / "ktap_demo.sh"
    script.write_text(KTAP_SCRIPT)
    script.chmod(0o755)
    junit = tmp_path / "junit.xml"
    r = run_pytest(suite, "--accel", "tcg", f"--junitxml={junit}", "--artifacts", str(tmp_path / "artifacts"))
    assert r.returncode == 1, r.stdout + r.stderr
    cases = {c.get("name"): [x.tag for x in c if x.tag != "properties"]
             for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["ktap_demo.sh[first]"] == []
    assert cases["ktap_demo.sh[second]"] == ["failure"]
    assert cases["ktap_demo.sh[third]"] == ["skipped"]
