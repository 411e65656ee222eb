"""Paths a user may have: a space in the cache path, commas in the state path.

A space in the cache made every boot fail (the guest programs' ``make`` could not name its
output); a comma in the state path made ``harness down`` call a live VM "already gone" (QEMU's
command line carries the QMP socket path with the comma doubled). Each boots a real guest and
asserts the exit status, no traceback and (through the ``h`` fixture) no QEMU left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultlib import Harness, text, wait_for

from harness.vm.process import pid_alive

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]


def test_a_cache_path_with_a_space_boots(h: Harness, tmp_path: Path):
    """``XDG_CACHE_HOME`` with a space: the guest programs and the image are built there, and it boots."""
    from harness.paths import cache_dir

    real = cache_dir()
    xdg = tmp_path / "my cache, with space"
    cache = xdg / "numa-harness"
    cache.mkdir(parents=True)
    for sub in ("kernels", "hostkey"):  # reuse the fetched kernel; the rest is built in the new cache
        (cache / sub).symlink_to(real / sub)
    env = {"XDG_CACHE_HOME": str(xdg), "NUMA_HARNESS_CACHE": ""}
    r = h.run("run", "numa-basic", "--", "ls /usr/lib/numa-harness/guest-tests", env=env, timeout=800)
    assert r.returncode == 0, text(r)
    assert "Traceback" not in text(r)
    assert "place" in r.stdout.decode()  # the guest programs were built into the spaced cache
    assert any((cache / "guest-programs").rglob("place"))


def test_a_comma_in_the_state_path_is_seen_by_status_and_down(h: Harness, tmp_path: Path):
    h.state = tmp_path / "state,with,commas"
    r = h.run("up", "numa-basic", "--name", "comma")
    assert r.returncode == 0, text(r)
    st = h.state_of("comma")
    try:
        assert pid_alive(st["pid"])
        status = h.run("status").stdout.decode()
        assert "comma" in status and "running" in status, status
        r = h.run("ssh", "comma", "--", "echo alive", timeout=120)
        assert r.returncode == 0 and r.stdout.decode() == "alive\n", text(r)
    finally:
        r = h.run("down", "comma", timeout=120)
    assert r.returncode == 0, text(r)
    assert "already gone" not in r.stdout.decode() and "is down" in r.stdout.decode(), text(r)
    assert wait_for(lambda: not pid_alive(st["pid"]), 10)
    assert not (h.state / "comma").exists()
