"""The harness command as a user runs it, against real guests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from qemu_procs import qemus_with_env

from harness.kernel.debian import default_kernel

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

HARNESS = [sys.executable, "-m", "harness.cli"]
# Every QEMU these tests start inherits this marker, so leak checks see only ours.
TAG = f"NUMA_HARNESS_TEST_TAG={uuid.uuid4().hex}"


def harness(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    key, value = TAG.split("=")
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, key: value, **(env or {})})


def our_qemus() -> list[int]:
    """Live QEMU processes started by these tests (zombies excluded)."""
    return qemus_with_env(TAG)


def test_run_prints_two_nodes_and_passes_exit_status():
    r = harness("run", "numa-basic", "--", "numactl", "-H")
    assert r.returncode == 0, r.stderr
    assert "available: 2 nodes (0-1)" in r.stdout
    assert "node 1 cpus: 1" in r.stdout
    r = harness("run", "numa-basic", "--", "false")
    assert r.returncode == 1, r.stderr
    assert "image: cached" in r.stderr, "a second boot with a warm cache rebuilt the guest image"
    assert our_qemus() == []


def test_run_cxl_single_lists_mem0():
    r = harness("run", "cxl-single", "--", "ls", "/sys/bus/cxl/devices")
    assert r.returncode == 0, r.stderr
    assert "mem0" in r.stdout.split()


def test_user_kernel_path_boots(tmp_path):
    """--kernel/--modules/--kernel-config: the path a developer's own build takes."""
    k = default_kernel()
    r = harness("run", "numa-basic", "--kernel", str(k.image), "--modules", str(k.modules_root),
                "--kernel-config", str(k.config), "--", "uname", "-r")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == k.release
    assert "user" in r.stderr or "kernel:" in r.stderr


def test_missing_kernel_is_a_clear_error_and_boots_nothing(tmp_path):
    r = harness("run", "numa-basic", "--kernel", str(tmp_path / "nope"), "--", "true")
    assert r.returncode == 125
    assert "Traceback" not in r.stderr and "nope" in r.stderr
    assert our_qemus() == []


def test_background_vm_up_ssh_status_down(tmp_path):
    env = {"NUMA_HARNESS_STATE": str(tmp_path / "vms")}
    r = harness("up", "numa-basic", "--name", "t1", env=env)
    assert r.returncode == 0, r.stderr
    try:
        r = harness("ssh", "t1", "--", "cat", "/sys/devices/system/node/online", env=env)
        assert r.returncode == 0 and r.stdout.strip() == "0-1", r.stderr
        r = harness("status", env=env)
        assert "t1" in r.stdout and "running" in r.stdout
        r = harness("up", "numa-basic", "--name", "t1", env=env)
        assert r.returncode == 125 and "already exists" in r.stderr
    finally:
        d = harness("down", "t1", env=env)
    assert d.returncode == 0, d.stderr
    r = harness("ssh", "t1", "--", "true", env=env)
    assert r.returncode == 125 and "no VM named 't1'" in r.stderr
    assert our_qemus() == []
