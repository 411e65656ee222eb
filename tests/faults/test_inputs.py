"""Faults at the door: names, numbers, QEMU version, caches. None of these boots a guest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faultlib import Harness, assert_one_line_error, text


@pytest.mark.parametrize("name", ["{victim}", "", ".", "..", "../x"])
def test_1_vm_name_is_a_name_never_a_path(h: Harness, tmp_path: Path, name: str):
    victim = tmp_path / "somedir"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    h.state.mkdir()
    (h.state / "other").mkdir()
    r = h.run("up", "numa-basic", "--name", name.format(victim=victim), "--kernel", "/nonexistent")
    assert_one_line_error(r, 125, "invalid VM name")
    assert (victim / "keep").read_text() == "mine"
    assert (h.state / "other").is_dir() and h.state.parent.is_dir()
    for cmd in ("ssh", "down"):
        assert_one_line_error(h.run(cmd, name.format(victim=victim)), 125, "invalid VM name")


@pytest.mark.parametrize("args,cause", [
    (["--ssh-port", "70000"], "port 70000 is not in 1-65535"),
    (["--ssh-port", "-1"], "port -1 is not in 1-65535"),
    (["--ssh-port", "ssh"], "not a port number"),
    (["--timeout", "-1"], "timeout must be a positive number"),
    (["--timeout", "0"], "timeout must be a positive number"),
])
def test_11_ports_and_timeouts_are_checked_before_anything_boots(h: Harness, args, cause):
    t0 = time.monotonic()
    r = h.run("run", "numa-basic", *args, "--", "true")
    assert time.monotonic() - t0 < 10, "refused only after work was done"
    assert_one_line_error(r, 125, cause)
    assert h.qemus() == []


def fake_qemu(tmp: Path, version: str, log: Path, *, body: str = "") -> Path:
    """A QEMU stand-in: reports ``version`` and records how it was called."""
    path = tmp / "qemu-system-x86_64"
    path.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$1" in
--version) echo "QEMU emulator version {version}"; exit 0 ;;
esac
{body}
exit 1
""")
    path.chmod(0o755)
    return path


def test_12_version_checked_before_the_accelerator_probe(h: Harness, tmp_path: Path):
    log = tmp_path / "calls"
    qemu = fake_qemu(tmp_path, "7.2.0 (Debian 1:7.2+dfsg-7)", log)
    r = h.run("run", "numa-basic", "--qemu", str(qemu), "--accel", "auto", "--", "true",
              env={"NUMA_HARNESS_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(r, 125, "QEMU 7.2.0")
    assert "too old" in text(r)
    calls = log.read_text().splitlines()
    assert calls and all(c.startswith(("--version", "-device help", "-object help")) for c in calls), calls


def test_missing_and_hanging_qemu(h: Harness, tmp_path: Path):
    r = h.run("run", "numa-basic", "--qemu", str(tmp_path / "nope"), "--", "true")
    assert_one_line_error(r, 125, "nope")
    hang = fake_qemu(tmp_path, "10.0.2", tmp_path / "calls")
    hang.write_text("#!/bin/sh\nexec sleep 600\n")
    t0 = time.monotonic()
    r = h.run("run", "numa-basic", "--qemu", str(hang), "--", "true", env={"NUMA_HARNESS_CACHE": str(tmp_path / "c")})
    assert_one_line_error(r, 125, "did not answer")
    assert time.monotonic() - t0 < 120


def test_13_harness_failure_is_125_not_a_guest_status(h: Harness, tmp_path: Path):
    r = h.run("run", "numa-basic", "--kernel", str(tmp_path / "nope"), "--", "true")
    assert_one_line_error(r, 125, "nope")
    r = h.run("validate", "no-such-preset")
    assert r.returncode == 125 and "Traceback" not in text(r)
    r = h.run("run", "numa-basic", "--no-such-option")
    assert r.returncode == 125 and "Traceback" not in text(r)


@pytest.mark.parametrize("opts,cause", [("ro,size=1m", "read-only file system"),
                                        ("size=1m", "no space left on")])
@pytest.mark.live  # needs the default kernel's files (fetched once)
def test_7_read_only_or_full_cache_is_one_line(h: Harness, tmpfs, default_kernel_files, opts, cause):
    k = default_kernel_files
    cache = tmpfs(opts)
    r = h.run("run", "numa-basic", "--kernel", str(k.image), "--modules", str(k.modules_root),
              "--kernel-config", str(k.config), "--", "true", env={"NUMA_HARNESS_CACHE": str(cache)})
    line = assert_one_line_error(r, 125, "")
    assert cause in line.lower() or cause in text(r).lower(), text(r)
    assert h.qemus() == []
