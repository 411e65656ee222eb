"""harness.plugin.ktap: collection of KTAP directories and scripts (no guest: --collect-only)."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness.plugin.ktap import _case_outcome, script_topology
from harness.selftest.ktap import parse_ktap

REPO = Path(__file__).resolve().parents[2]
KTAP = REPO / "tests" / "data" / "ktap"


def collect(*args: str, cwd: Path) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "harness.plugin.ktap", "--collect-only", "-q",
                        "-p", "no:cacheprovider", *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return [ln for ln in r.stdout.splitlines() if "::" in ln]


def test_ktap_dir_collects_its_executables(tmp_path):
    ids = collect("--ktap-dir", str(KTAP), str(tmp_path), cwd=tmp_path)
    assert [i.rsplit("/", 1)[-1] for i in ids] == [
        "ktap_fail.sh::ktap_fail.sh", "ktap_nested.sh::ktap_nested.sh", "ktap_nodes.sh::ktap_nodes.sh",
        "ktap_skip.sh::ktap_skip.sh"]


def test_ktap_scripts_are_collected_where_pytest_looks(tmp_path):
    (tmp_path / "ktap_mine.sh").write_text("#!/bin/sh\n# numa-harness: topology=cxl-single\necho 1..0\n")
    (tmp_path / "ktap_mine.sh").chmod(0o755)
    (tmp_path / "ktap_helper.sh").write_text("x=1\n")  # not executable: a helper
    ids = collect(str(tmp_path), "-m", "topology", cwd=tmp_path)
    assert ids == ["ktap_mine.sh::ktap_mine.sh"]
    assert collect(str(tmp_path), "-k", "cxl-single", cwd=tmp_path) == ids


def test_script_topology_line(tmp_path):
    p = tmp_path / "t.sh"
    p.write_text("#!/bin/bash\n# SPDX-License-Identifier: GPL-2.0\n#  numa-harness: topology = memory-only\n")
    assert script_topology(p) == "memory-only"
    p.write_text("#!/bin/bash\n")
    assert script_topology(p) is None


def test_case_outcomes():
    rep = parse_ktap("KTAP version 1\n1..3\nok 1 a # SKIP no CXL\n# wanted 2\nnot ok 2 b\nok 3 c # XFAIL known\n")
    a, b, c = rep.results
    assert _case_outcome(a, Path("/t.sh")) == ("skipped", ("/t.sh", 0, "Skipped: no CXL"))
    assert _case_outcome(b, Path("/t.sh")) == ("failed", "not ok 2 b\nwanted 2")
    assert _case_outcome(c, Path("/t.sh")) == ("passed", None)


def test_kunit_adds_one_item_per_suite_glob(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--kunit",
                        "--kunit-suite", "damon*", "--kunit-suite", "example", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[:2] == ["kunit[damon*]", "kunit[example]"]
    assert "2 tests collected" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--kunit",
                        "-k", "not damon", "--kunit-suite", "damon*", "--kunit-suite", "example", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.stdout.splitlines()[0] == "kunit[example]" and "1 deselected" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--kunit",
                        str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.stdout.splitlines()[0] == "kunit"


def test_kunit_options_need_kunit(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "--kunit-module", "slub_kunit", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode != 0 and "--nh-kunit-suite and --nh-kunit-module go with --nh-kunit" in r.stderr


def test_a_failed_kunit_case_shows_kunits_expectation_lines():
    from harness.selftest import kunit
    from harness.selftest.run import case_results

    text = (Path(__file__).parent / "data" / "kunit" / "debugfs" / "nh_nodes" / "results").read_text()
    cases = dict(case_results(kunit.suite_outcome("nh_nodes", text)))
    outcome, longrepr = _case_outcome(cases["nh_sixty_four_nodes"], Path("/k"))
    assert outcome == "failed"
    assert longrepr.splitlines()[2:4] == ["Expected num_node_state(N_ONLINE) == 64, but",
                                          "num_node_state(N_ONLINE) == 2 (0x2)"]


REPORTING_CONFTEST = '''
import pytest
from harness.plugin.ktap import _case_outcome, _log_result
from harness.selftest.ktap import parse_ktap

def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".ktap":
        return KtapText.from_parent(parent, path=file_path)

class KtapText(pytest.File):
    def collect(self):
        yield Results.from_parent(self, name=self.path.name)

class Results(pytest.Item):
    """Reports a recorded KTAP text's results the way KtapItem reports a guest's."""
    def runtest(self):
        for path, r in [(r.name, r) for r in parse_ktap(self.path.read_text()).results]:
            _log_result(self, path, *_case_outcome(r, self.path))
'''


def _reporting_run(tmp_path, *args):
    (tmp_path / "conftest.py").write_text(REPORTING_CONFTEST)
    (tmp_path / "one.ktap").write_text("KTAP version 1\n1..3\nok 1 node0 has memory\n"
                                       "ok 2 private masks # SKIP no private nodes\nnot ok 3 sixty-four nodes\n")
    (tmp_path / "two.ktap").write_text("KTAP version 1\n1..1\nok 1 all fine\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _assert_each_result_reported(r):
    assert "SUBSKIPPED[private masks] [1] one.ktap:0: no private nodes" in r.stdout, r.stdout + r.stderr
    assert "SUBFAILED[sixty-four nodes] one.ktap::one.ktap - not ok 3 sixty-four nodes" in r.stdout
    assert "1 failed, 2 passed, 1 skipped, 2 subtests passed" in r.stdout  # items and results, as pytest counts subtests
    assert "INTERNALERROR" not in r.stdout + r.stderr


def test_each_ktap_result_is_a_subtest_of_its_item(tmp_path):
    import xml.etree.ElementTree as ET

    r = _reporting_run(tmp_path, f"--junitxml={tmp_path / 'j.xml'}")
    _assert_each_result_reported(r)
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props == {"ktap node0 has memory": "passed", "ktap private masks": "skipped: no private nodes",
                     "ktap sixty-four nodes": "failed: not ok 3 sixty-four nodes", "ktap all fine": "passed"}


def test_ktap_results_are_reported_under_xdist(tmp_path):
    pytest.importorskip("xdist")
    r = _reporting_run(tmp_path, "-n", "2")
    _assert_each_result_reported(r)
    assert "[gw" in r.stdout  # the results came from worker processes
