"""scripts/kernel_matrix.py (``make test``'s kernel matrix) with a stand-in for pytest: every kernel
runs, each gets its line with its summary and wall time, the closing line is a real pytest summary
(the first failed run's), and the exit status is the failure's."""

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
    """Passes on the default kernel, fails with one test on ``--kernel bad``."""
    p = tmp_path / "pytest"
    p.write_text('#!/bin/sh\necho "collected 3 items"\n'
                 'case "$*" in *"--kernel bad"*) echo "==== 1 failed, 2 passed in 1.50s ===="; exit 1 ;; esac\n'
                 'echo "===== 3 passed in 2.00s ====="\n')
    p.chmod(0o755)
    return p


def test_every_kernel_runs_and_the_closing_line_is_the_failed_runs_summary(tmp_path, capsys):
    m = matrix()
    releases = {None: "6.12.117+deb12-amd64", "bad": "7.2.13+deb14-amd64", "debian:7.2": "7.2.13+deb14-amd64"}
    status = m.main(["--pytest", str(fake_pytest(tmp_path)), "--kernel", "bad", "--kernel", "debian:7.2",
                     "--", "-k", "x"], release=releases.get)
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert out[-1] == "==== 1 failed, 2 passed in 1.50s ===="
    table = out[out.index("### kernel matrix") + 1:-1]
    assert len(table) == 3
    assert table[0].startswith("default kernel: every test (6.12.117+deb12-amd64): ===== 3 passed in 2.00s")
    assert table[1].startswith("bad: guest-tests (7.2.13+deb14-amd64): ==== 1 failed") and "wall time 0 min" in table[1]
    assert "### kernel matrix: debian:7.2: guest-tests (7.2.13+deb14-amd64): " in "\n".join(out)


def test_all_passing_closes_with_the_default_kernels_summary(tmp_path, capsys):
    m = matrix()
    status = m.main(["--pytest", str(fake_pytest(tmp_path)), "--kernel", "debian:7.2"], release=lambda k: "")
    out = capsys.readouterr().out.splitlines()
    assert status == 0 and out[-1] == "===== 3 passed in 2.00s ====="
