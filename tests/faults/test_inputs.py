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


# --- topology input the validator used to let through (issue 19) ----------------------------

_VALID = """\
description: fault input
machine:
  smp: 2{machine}
nodes:
  - {{id: 0, cpus: 0-1, memory: 1G}}
  - {{id: 1, memory: 512M{initiator}}}
{hmat}{extra}"""
_HMAT = "hmat:\n  links:\n    - {{initiator: 0, target: 0, latency: 10}}\n    - {{initiator: 0, target: 1, latency: {lat}}}\n"


def _topology(tmp: Path, *, machine: str = "", initiator: bool = True, hmat: bool = True, lat: str = "150",
              extra: str = "") -> Path:
    f = tmp / "topo.yaml"
    f.write_text(_VALID.format(machine=machine, initiator=", initiator: 0" if initiator else "",
                               hmat=_HMAT.format(lat=lat) if hmat else "", extra=extra))
    return f


@pytest.mark.parametrize("case,kw,cause", [
    ("cmdline-too-long", {"machine": "\n  kernel_cmdline: " + "a" * 1800}, "machine.kernel_cmdline: is 1800 bytes"),
    ("cmdline-unbalanced-quote", {"machine": "\n  kernel_cmdline: 'dyndbg=\"file cxl/* +p'"},
     "machine.kernel_cmdline: has an unbalanced double quote"),
    ("hmat-latency-1e30", {"lat": "1" + "0" * 30}, "hmat.links[1].latency: latency 1" + "0" * 30 + " ns does not fit"),
    ("device-id-5000", {"extra": "pci_devices: [{id: " + "d" * 5000 + ", driver: pci-testdev}]\n"},
     "pci_devices[0].id: id 'dddddddddddddddddddd'... is 5000 characters long"),
    ("cpu-host-tcg", {"machine": "\n  cpu: host\n  accel: tcg"}, "machine.cpu: cpu: host needs KVM"),
    ("initiator-without-hmat", {"hmat": False}, "nodes[1].initiator: initiator is HMAT data"),
])
def test_input_the_validator_let_through_is_one_line_before_anything_runs(h: Harness, tmp_path: Path, case, kw, cause):
    topo = _topology(tmp_path, **kw)
    t0 = time.monotonic()
    r = h.run("run", str(topo), "--", "true")
    line = assert_one_line_error(r, 125, cause)
    assert len(line) < 600, line  # one readable line, even for a 5000-character id
    assert time.monotonic() - t0 < 30
    assert h.qemus() == [] and not (h.state.exists() and any(h.state.iterdir()))
    assert list(h.tmp.iterdir()) == []
    v = h.run("validate", str(topo))
    assert v.returncode == 125 and "Traceback" not in text(v)
    assert f"{topo}:" in text(v) and ": error: " in text(v)


def test_a_second_pause_for_qemu_is_refused_before_anything_runs(h: Harness):
    r = h.run("run", "numa-basic", "--qemu-arg", "-s", "--qemu-arg", "-S", "--", "true")
    assert_one_line_error(r, 125, "--qemu-arg -S: the harness starts QEMU paused itself")
    assert h.qemus() == [] and list(h.tmp.iterdir()) == []


def test_yaml_merge_of_a_non_mapping_is_our_one_line(h: Harness, tmp_path: Path):
    topo = tmp_path / "merge.yaml"
    topo.write_text("description: m\nnodes:\n  - {<<: 5, id: 0, cpus: 0-1, memory: 1G}\n")
    r = h.run("run", str(topo), "--", "true")
    line = assert_one_line_error(r, 125, "'<<:' merges a mapping into this one, and this is not a mapping")
    assert "constructor" not in line and h.qemus() == []


@pytest.mark.live  # goes as far as QEMU's preflight: needs the default kernel and image (cached)
@pytest.mark.parametrize("cpu,cause", [("max,+avx9", "knows no CPU flag 'avx9'"),
                                       ("host", "machine.cpu is host, which needs KVM")])
def test_cpu_qemu_would_refuse_is_one_line_before_qemu_starts(h: Harness, tmp_path: Path, cpu, cause):
    topo = _topology(tmp_path, machine=f"\n  cpu: '{cpu}'")
    r = h.run("run", str(topo), "--accel", "tcg", "--", "true")
    assert_one_line_error(r, 125, cause)
    assert h.qemus() == [] and not (h.state.exists() and any(h.state.iterdir()))
