"""The rest of the matrix: the harness killed or interrupted mid-boot and mid-command, a taken port,
a command that never ends, kernels that are missing or not kernels, a corrupt cache file.

Each asserts the exit status, the one-line cause where there is one, no traceback, and
(through the ``h`` fixture) that no QEMU this test started is left.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from faultlib import Harness, assert_one_line_error, text, wait_for

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]


def booting(h: Harness, *args: str):
    """``harness run numa-basic ARGS`` started; returns once its QEMU exists."""
    p = h.popen("run", "numa-basic", *args)
    assert wait_for(lambda: bool(h.qemus()), 120), h.stderr_so_far()
    return p


def test_run_sigkilled_during_boot_takes_its_qemu_with_it(h: Harness):
    """The death signal: a SIGKILLed harness cannot clean up, so QEMU must die by itself."""
    p = booting(h, "--", "true")
    qemus = h.qemus()
    p.kill()
    p.wait(timeout=30)
    assert wait_for(lambda: not h.qemus(), 10), f"QEMU {qemus} outlived its SIGKILLed harness"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_during_boot_stops_qemu(h: Harness, sig: signal.Signals):
    """Exit 130 (Ctrl-C) or 128+N, or 125 if the interruption surfaced as a failed boot; never a traceback."""
    p = booting(h, "--", "true")
    p.send_signal(sig)
    code = p.wait(timeout=60)
    err = h.stderr_so_far()
    assert "Traceback" not in err, err
    assert code in (130, 128 + sig, 125), f"exit {code}: {err}"
    assert wait_for(lambda: not h.qemus(), 10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_during_a_command_stops_qemu(h: Harness, sig: signal.Signals):
    """The guest command is still running when the signal comes; QEMU is shut down all the same."""
    p = h.popen("run", "numa-basic", "--", "echo started; sleep 600")
    assert wait_for(lambda: "SSH ready" in h.stderr_so_far(), 180), h.stderr_so_far()
    time.sleep(1)
    p.send_signal(sig)
    code = p.wait(timeout=60)
    err = h.stderr_so_far()
    assert "Traceback" not in err, err
    assert code != 0
    assert wait_for(lambda: not h.qemus(), 10)


def test_a_taken_ssh_port_is_refused_before_boot(h: Harness):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_one_line_error(h.run("run", "numa-basic", "--ssh-port", str(port), "--", "true"), 125,
                              f"port {port} on 127.0.0.1 is busy")


def test_a_never_ending_command_ends_at_its_timeout(h: Harness):
    t0 = time.monotonic()
    r = h.run("run", "numa-basic", "--timeout", "5", "--", "sleep 600", timeout=300)
    assert_one_line_error(r, 125, "timed out after 5 s")
    assert time.monotonic() - t0 < 200


def test_missing_and_text_kernels_are_refused_before_qemu(h: Harness, tmp_path: Path):
    assert_one_line_error(h.run("run", "numa-basic", "--kernel", str(tmp_path / "nope"), "--", "true"), 125,
                          "nope")
    textfile = tmp_path / "bzImage"
    textfile.write_text("this is not a kernel\n" * 100)
    r = h.run("run", "numa-basic", "--kernel", str(textfile), "--", "true")
    line = assert_one_line_error(r, 125, str(textfile))
    assert "bzImage" in line or "kernel" in line
    assert h.qemus() == []


def test_a_corrupt_cache_file_is_not_trusted(h: Harness, tmp_path: Path):
    """The QEMU capability cache, the accelerator verdict and the image manifest written as
    garbage: the next run notices, redoes the work and boots."""
    cache = tmp_path / "cache"
    env = {"NUMA_HARNESS_CACHE": str(cache)}
    from harness.paths import cache_dir

    real = cache_dir()
    cache.mkdir()
    for sub in ("kernels", "hostkey"):  # reuse the fetched kernel; everything else starts over
        (cache / sub).symlink_to(real / sub)
    r = h.run("run", "numa-basic", "--", "true", env=env, timeout=400)
    assert r.returncode == 0, text(r)
    corrupted = []
    for f in list(cache.rglob("*.json")):
        if f.is_file() and "kernels" not in f.parts:
            f.write_bytes(b"\x00garbage{")
            corrupted.append(f)
    assert corrupted
    r = h.run("run", "numa-basic", "--", "true", env=env, timeout=400)
    assert r.returncode == 0, text(r)
    assert "Traceback" not in text(r)
