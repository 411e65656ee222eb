"""The Makefile's variables reach the commands of every target they belong to.

Reads ``make -n`` (the commands make would run, none of them run) with the variables the
README shows, and finds each one in the command of the target: pytest gets the kernel and
accelerator through the environment (so every boot a test makes sees them), the CLI and the
benchmark through options.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def commands(target: str, *variables: str) -> list[str]:
    """The commands ``make TARGET VARIABLES`` would run, continuation lines joined."""
    r = subprocess.run(["make", "-n", "-C", str(REPO), target, *variables], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [" ".join(line.split()) for line in r.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def the(lines: list[str], word: str) -> str:
    (line,) = [ln for ln in lines if word in ln]
    return line


def test_make_test_takes_kernel_modules_accel_and_topology():
    line = the(commands("test", "KERNEL=/k/bzImage", "MODULES=/k/mods", "ACCEL=tcg", "TOPO=tiered-3",
                        "PYTEST_ARGS=-x"), "kernel_matrix.py")
    assert line.startswith("NUMA_HARNESS_KERNEL=/k/bzImage NUMA_HARNESS_MODULES=/k/mods NUMA_HARNESS_ACCEL=tcg ")
    assert line.endswith("-- --nh-topology tiered-3 -x")
    assert "--kernel debian:7.2" not in line  # your own kernel: the matrix is that kernel alone
    line = the(commands("test", "KERNEL=/k/bzImage", "MATRIX_KERNELS=debian:7.2"), "kernel_matrix.py")
    assert "--kernel debian:7.2" in line


def test_make_test_with_nothing_set_is_the_default_kernel_and_the_matrix():
    line = the(commands("test"), "kernel_matrix.py")
    assert line.startswith(".venv/bin/python scripts/kernel_matrix.py --kernel debian:7.2 --")
    assert "NUMA_HARNESS_" not in line and "--nh-topology" not in line


def test_make_unit_takes_kernel_and_accel():
    line = the(commands("unit", "ACCEL=kvm", "KERNEL=debian:7.2"), "bin/pytest")
    assert line.startswith("NUMA_HARNESS_KERNEL=debian:7.2 NUMA_HARNESS_ACCEL=kvm ")


def test_make_bench_takes_topo_and_keeps_bench_topo():
    assert "--topology tiered-3 --kernel /k --accel tcg" in the(
        commands("bench", "TOPO=tiered-3", "KERNEL=/k", "ACCEL=tcg"), "scripts/bench.py")
    assert "--topology memory-only" in the(commands("bench", "BENCH_TOPO=memory-only"), "scripts/bench.py")
    assert "--topology numa-basic" in the(commands("bench"), "scripts/bench.py")


def test_make_boot_and_up_take_topo_kernel_modules_and_accel():
    assert the(commands("boot"), "harness boot").endswith("harness boot cxl-single")
    line = the(commands("boot", "TOPO=tiered-3", "KERNEL=/k", "MODULES=/m", "ACCEL=tcg"), "harness boot")
    assert line.endswith("harness boot tiered-3 --kernel /k --modules /m --accel tcg")
    line = the(commands("up", "TOPO=tiered-3", "NAME=x", "KERNEL=debian:7.2"), "harness up")
    assert line.endswith("harness up tiered-3 --name x --kernel debian:7.2")
