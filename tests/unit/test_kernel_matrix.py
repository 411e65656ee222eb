"""scripts/kernel_matrix.py (``make test``'s kernel matrix) with a stand-in for pytest: every kernel
runs, each gets its line with its summary and wall time, the closing line is a pytest summary with
every run's counts added up, and the exit status is the failure's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def matrix():
    spec = importlib.util.spec_from_file_location("kernel_matrix", ROOT / "scripts" / "kernel_matrix.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kernel_matrix"] = mod
    spec.loader.exec_module(mod)
    return mod


def fake_pytest(tmp_path: Path) -> Path:
    """Passes on the default kernel, fails with one test on ``--nh-kernel bad``."""
    p = tmp_path / "pytest"
    p.write_text('#!/bin/sh\necho "collected 3 items"\n'
                 'case "$*" in *"--nh-kernel bad"*) echo "==== 1 failed, 2 passed in 1.50s ===="; exit 1 ;; esac\n'
                 'echo "===== 3 passed in 2.00s ====="\n')
    p.chmod(0o755)
    return p


def test_every_kernel_runs_and_the_closing_line_adds_up_every_run(tmp_path, capsys):
    m = matrix()
    releases = {None: "6.12.117+deb12-amd64", "bad": "7.2.13+deb14-amd64", "debian:7.2": "7.2.13+deb14-amd64"}
    status = m.main(["--pytest", str(fake_pytest(tmp_path)), "--kernel", "bad", "--kernel", "debian:7.2",
                     "--", "-k", "x"], release=releases.get)
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert out[-1].startswith("==== 1 failed, 8 passed in ") and out[-1].endswith(", all kernels) ====")
    assert m.SUMMARY_RE.match(out[-1])
    table = out[out.index("### kernel matrix") + 1:-1]
    assert len(table) == 3
    assert table[0].startswith("default kernel: every test (6.12.117+deb12-amd64): ===== 3 passed in 2.00s")
    assert table[1].startswith("bad: guest-tests (7.2.13+deb14-amd64): ==== 1 failed") and "wall time 0 min" in table[1]
    assert "### kernel matrix: debian:7.2: guest-tests (7.2.13+deb14-amd64): " in "\n".join(out)


def test_all_passing_closes_with_both_runs_counted(tmp_path, capsys):
    m = matrix()
    status = m.main(["--pytest", str(fake_pytest(tmp_path)), "--kernel", "debian:7.2"], release=lambda k: "")
    out = capsys.readouterr().out.splitlines()
    assert status == 0 and out[-1].startswith("==== 6 passed in ")


def test_the_totals_add_every_count_pytest_prints():
    m = matrix()
    legs = [m.Leg("a", [], None, 0, "==== 990 passed, 48 skipped, 12 xfailed in 1397.57s (0:23:17) ====", "", 1397.57),
            m.Leg("b", [], "debian:7.2", 1, "==== 1 failed, 55 passed, 46 skipped, 12 xfailed, 1 error in 700.00s ====",
                  "", 700.0)]
    assert m.totals(legs) == ("==== 1 failed, 1045 passed, 94 skipped, 24 xfailed, 1 error in 2097.57s "
                              "(34 min 57 s, all kernels) ====")
    crashed = [m.Leg("a", [], None, 2, "", "", 1.0)]
    assert m.totals(crashed).startswith("==== 1 error in ")
