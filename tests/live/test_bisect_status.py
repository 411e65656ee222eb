"""``harness run``'s exit status as ``git bisect run`` reads it: a kernel that panics at boot is bad
(:data:`harness.errors.BAD_KERNEL`), a harness that could not test is a skip (125)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from qemu_procs import qemus_with_env

from harness.errors import BAD_KERNEL
from harness.topology import resolve

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

TAG = f"NUMA_HARNESS_TEST_TAG={uuid.uuid4().hex}"


def harness(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    key, value = TAG.split("=")
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, key: value})


def test_a_kernel_that_panics_at_boot_is_bad_and_a_missing_kernel_is_a_skip(tmp_path: Path):
    topo = yaml.safe_load(resolve("numa-basic").read_text())
    # No init to run: the kernel panics ("Requested init /nonexistent failed") before /init prints anything.
    topo.setdefault("machine", {})["kernel_cmdline"] = "rdinit=/nonexistent init=/nonexistent panic=-1"
    f = tmp_path / "panics-at-boot.yaml"
    f.write_text(yaml.safe_dump(topo))
    r = harness("run", str(f), "--accel", "tcg", "--", "true")
    assert r.returncode == BAD_KERNEL, r.stderr
    assert "Kernel panic - not syncing" in r.stderr and "Traceback" not in r.stderr
    # the same command with no kernel to boot: the harness could not test (git bisect skips it)
    r = harness("run", "numa-basic", "--kernel", str(tmp_path / "no-such-bzImage"), "--", "true")
    assert r.returncode == 125, r.stderr
    assert "no-such-bzImage" in r.stderr
    assert not qemus_with_env(TAG)
