"""Under pytest-xdist one topology's tests run on one worker (``xdist_group`` by topology,
``--dist loadgroup`` when ``-n`` comes without ``--dist``), and each worker knows how many VMs run
at once. The tests here boot nothing: their items carry topology marks but use no VM."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from harness.plugin.parallel import dist_given, group_name

TESTS = '''
import os
import pytest

@pytest.mark.topology("{a}")
@pytest.mark.parametrize("i", range(4))
def test_a(i):
    assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "2"

@pytest.mark.topology("{b}")
@pytest.mark.parametrize("i", range(4))
def test_b(i):
    pass

@pytest.mark.topology("{b}")
@pytest.mark.xdist_group("mine")
def test_own_group():
    pass
'''


def run_n2(tmp_path, *extra: str) -> dict[str, set[str]]:
    (tmp_path / "test_groups.py").write_text(TESTS.format(a="numa-basic", b="memory-only"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-v", *extra,
                        str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    workers: dict[str, set[str]] = defaultdict(set)
    for m in re.finditer(r"\[(gw\d)\] \[\s*\d+%\] PASSED \S+::(test_\w+)", r.stdout):
        workers[m.group(2)].add(m.group(1))
    assert sum(1 for _ in re.finditer(r"PASSED", r.stdout)) == 9, r.stdout
    return workers


def test_one_topologys_tests_stay_on_one_worker(tmp_path):
    workers = run_n2(tmp_path)
    assert len(workers["test_a"]) == 1 and len(workers["test_b"]) == 1, dict(workers)


def test_an_explicit_dist_is_left_alone(tmp_path):
    (tmp_path / "test_groups.py").write_text(TESTS.format(a="numa-basic", b="memory-only"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "each",
                        "-q", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and "18 passed" in r.stdout, r.stdout  # each: every test on both workers


def test_dist_given_and_group_names():
    assert dist_given(["-n", "2", "--dist", "load"]) and dist_given(["--dist=loadscope"]) and dist_given(["-d"])
    assert not dist_given(["-n", "2", "-k", "dist"])
    assert group_name("cxl-single") == "numa-harness-cxl-single"
