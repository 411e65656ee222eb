"""Faults with a real guest: dead and half-booted background VMs, killed and frozen commands, bad kernels."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from faultlib import Harness, assert_one_line_error, text, wait_for

from harness.errors import BAD_KERNEL
from harness.vm.process import pid_alive

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]


def up(h: Harness, name: str) -> dict:
    r = h.run("up", "numa-basic", "--name", name)
    assert r.returncode == 0, text(r)
    return h.state_of(name)


def test_2_up_killed_mid_boot_leaves_a_vm_status_sees_and_down_stops(h: Harness):
    p = h.popen("up", "numa-basic", "--name", "half")
    try:
        assert wait_for(lambda: (h.state / "half" / "vm.json").exists(), 120), "no state written at spawn"
        assert "SSH ready" not in h.stderr_so_far()
    finally:
        p.kill()
        p.wait()
    st = h.state_of("half")
    assert pid_alive(st["pid"]) and st["phase"] in ("booting", "running")
    r = h.run("status")
    out = r.stdout.decode()
    assert "half" in out and ("boot abandoned" in out or "running" in out), out
    r = h.run("down", "half")
    assert r.returncode == 0, text(r)
    assert not (h.state / "half").exists()
    assert not pid_alive(st["pid"])


def test_3_down_does_not_need_the_guest(h: Harness):
    st = up(h, "nossh")
    h.run("ssh", "nossh", "--", "kill -9 $(pidof dropbear)", timeout=60)
    t0 = time.monotonic()
    r = h.run("down", "nossh", timeout=60)
    assert r.returncode == 0, text(r)
    assert time.monotonic() - t0 < 15
    assert not pid_alive(st["pid"]) and not (h.state / "nossh").exists()


def test_4_ssh_to_a_dead_vm_keeps_its_state_for_down(h: Harness):
    st = up(h, "dead")
    os.kill(st["pid"], signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(st["pid"]), 10)
    assert_one_line_error(h.run("ssh", "dead", "--", "true"), 125, "no longer running")
    assert (h.state / "dead" / "vm.json").exists()
    assert "dead" in h.run("status").stdout.decode()
    r = h.run("down", "dead")
    assert r.returncode == 0 and "already gone" in r.stdout.decode(), text(r)
    assert not (h.state / "dead").exists()


def test_14_15_state_is_private_and_ssh_passes_stdin(h: Harness):
    old = os.umask(0)
    try:
        st = up(h, "io")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((h.state / "io").stat().st_mode) == 0o700
        assert stat.S_IMODE(h.state.stat().st_mode) == 0o700
        data = b"line one\nline two\n" * 1000
        r = h.run("ssh", "io", "--", "sh", "-c", "cat > /tmp/x", input=data)
        assert r.returncode == 0, text(r)
        r = h.run("ssh", "io", "--", "md5sum < /tmp/x")
        import hashlib

        assert r.stdout.decode().split()[0] == hashlib.md5(data).hexdigest()
        r = h.run("up", "numa-basic", "--name", "io")
        assert_one_line_error(r, 125, "already exists")
    finally:
        assert h.run("down", "io").returncode == 0
    assert not pid_alive(st["pid"])


def test_8_13_oom_killed_command_exits_137_and_says_so(h: Harness):
    r = h.run("run", "numa-basic", "--", "memhog", "1900M")
    line = assert_one_line_error(r, 137, "killed by the OOM killer")
    assert "Out of memory: Killed process" in line and "(memhog)" in line
    assert "SSH connection lost" not in text(r)
    r = h.run("run", "numa-basic", "--", "exit 2")
    assert r.returncode == 2 and "\nerror:" not in text(r)


def test_9_frozen_guest_is_reported_within_tens_of_seconds(h: Harness):
    p = h.popen("run", "numa-basic", "--timeout", "500", "--", "sleep 400")
    try:
        assert wait_for(lambda: "SSH ready" in h.stderr_so_far(), 180), h.stderr_so_far()
        time.sleep(2)  # the command runs
        pid = h.qemus()[0]
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        p.wait(timeout=120)
        took = time.monotonic() - t0
        err = h.stderr_so_far().encode()
    finally:
        for q in h.qemus():
            os.kill(q, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 125, err.decode()
    assert "does not answer" in err.decode() or "frozen" in err.decode(), err.decode()
    assert took < 60
    assert "Traceback" not in err.decode()
    # a stopped QEMU process is named as such, with a console log that is still there to read
    line = assert_one_line_error(subprocess.CompletedProcess([], p.returncode, b"", err), 125,
                                 "the QEMU process itself is stopped")
    assert f"pid {pid}" in line, line
    logs = re.findall(r"console log: (\S+console\.log)", err.decode())
    assert logs and Path(logs[0]).is_file(), err.decode()
    print(f"\nthe stopped QEMU was reported and the run ended {took:.1f} s after SIGSTOP")
    assert took < 30, f"reported after {took:.1f} s; the README says about 30 s"


def test_10_truncated_kernel_and_missing_modules_have_hints(h: Harness, default_kernel_files, tmp_path: Path):
    k = default_kernel_files
    trunc = tmp_path / "bzImage"
    trunc.write_bytes(k.image.read_bytes()[:3_000_000])
    r = h.run("run", "numa-basic", "--kernel", str(trunc), "--", "true")
    assert_one_line_error(r, 125, "before the kernel printed anything")
    assert "truncated" in text(r)
    r = h.run("run", "numa-basic", "--kernel", str(k.image), "--", "true")
    line = assert_one_line_error(r, 125, "network FAILED")
    assert "--modules" in line


def test_16_wrapper_that_does_not_exec_is_refused_and_leaves_nothing(h: Harness, tmp_path: Path):
    import shutil

    real = shutil.which("qemu-system-x86_64")
    assert real
    wrapper = tmp_path / "qemu-wrapper"
    wrapper.write_text(f'#!/bin/sh\n"{real}" "$@"\n')
    wrapper.chmod(0o755)
    r = h.run("run", "numa-basic", "--qemu", str(wrapper), "--accel", "tcg", "--", "true")
    assert_one_line_error(r, 125, "runs QEMU as a child")
    assert "exec" in text(r)


def test_panic_mid_command_and_qemu_killed(h: Harness):
    r = h.run("run", "numa-basic", "--", "echo c > /proc/sysrq-trigger")
    assert_one_line_error(r, BAD_KERNEL, "guest kernel panic")  # the kernel under test panicked: bad, not skip
    p = h.popen("run", "numa-basic", "--", "sleep 300")
    try:
        assert wait_for(lambda: "SSH ready" in h.stderr_so_far(), 180), h.stderr_so_far()
        time.sleep(2)
        os.kill(h.qemus()[0], signal.SIGKILL)
        p.wait(timeout=60)
        err = h.stderr_so_far().encode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 125 and "Traceback" not in err.decode(), err.decode()
    assert "QEMU exited unexpectedly" in err.decode(), err.decode()
