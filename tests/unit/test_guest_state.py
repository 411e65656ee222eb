"""The guest-state planner and parser, and the guest-state program run on the host against fake knobs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from harness.guest.state import (
    BASELINE,
    GuestState,
    GuestStateError,
    baseline_for,
    mismatches,
    parse_state_output,
    state_args,
    state_command,
)
from harness.resources import guest_files_dir
from harness.topology.load import parse


def test_baseline_turns_balancing_and_thp_off_and_keeps_demotion():
    assert (BASELINE.numa_balancing, BASELINE.thp, BASELINE.demotion) == ("0", "never", "keep")


def test_baseline_for_a_topology_takes_its_demotion_else_off():
    base = "description: d\nnodes:\n  - {id: 0, cpus: 0-1, memory: 1G}\n"
    assert baseline_for(parse(base, "t.yaml")) == GuestState.of(demotion=False)
    on = parse(base + "guest:\n  demotion: true\n", "t.yaml")
    assert (baseline_for(on).numa_balancing, baseline_for(on).thp, baseline_for(on).demotion) == ("0", "never", "true")


def test_of_accepts_ints_and_bools_and_rejects_unknown_values():
    s = GuestState.of(numa_balancing=2, thp="always", demotion=True)
    assert (s.numa_balancing, s.thp, s.demotion) == ("2", "always", "true")
    with pytest.raises(ValueError, match="numa_balancing='7'"):
        GuestState.of(numa_balancing=7)
    with pytest.raises(ValueError, match="unknown guest state 'thp_mode'"):
        GuestState.of(thp_mode="never")


def test_args_and_command():
    args = state_args(GuestState.of(demotion=False), mark="pytest begin 1 t.py::x")
    assert args == ["--numa-balancing", "0", "--thp", "never", "--thp-defrag", "keep", "--demotion", "false",
                    "--kill-programs", "--mark", "pytest begin 1 t.py::x"]
    assert state_command("/bin/gs", BASELINE, kill_programs=False).startswith("/bin/gs --numa-balancing 0")
    assert "'pytest begin 1 t.py::x'" in state_command("/bin/gs", BASELINE, mark="pytest begin 1 t.py::x")


def test_parse_and_mismatches():
    out = "numa_balancing=0\nthp=never\nthp_defrag=madvise\ndemotion=absent\nok\n"
    got = parse_state_output(out)
    assert got == {"numa_balancing": "0", "thp": "never", "thp_defrag": "madvise", "demotion": "absent"}
    assert mismatches(GuestState.of(demotion=True), got) == []  # absent knobs are not mismatches
    assert mismatches(GuestState.of(numa_balancing=2), got) == ["numa_balancing: wanted 2, the guest reads 0"]


def test_parse_errors():
    with pytest.raises(GuestStateError, match="refused a setting: knob=thp"):
        parse_state_output("error knob=thp file=/sys/x msg=Invalid argument\n")
    with pytest.raises(GuestStateError, match="no 'ok' line"):
        parse_state_output("numa_balancing=0\n")


@pytest.fixture
def program(tmp_path):
    """The guest-state program with its knob paths pointed into ``tmp_path`` (a fake /proc and /sys)."""
    text = (guest_files_dir() / "guest-state").read_text()
    knobs = {"/proc/sys/kernel/numa_balancing": "1\n",
             "/sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n",
             "/sys/kernel/mm/numa/demotion_enabled": "false\n"}
    for path, value in knobs.items():
        text = text.replace(path, str(tmp_path) + path)
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(value)
    text = text.replace("/sys/kernel/mm/transparent_hugepage/defrag", str(tmp_path / "no-such-defrag"))
    script = tmp_path / "guest-state"
    script.write_text(text)
    shutil.copy(guest_files_dir() / "lib.sh", tmp_path / "lib.sh")   # the library it sources, beside it
    return script


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_program_sets_and_reads_back(program, tmp_path, shell):
    sh = shutil.which(shell)
    if sh is None:
        pytest.skip(f"{shell} not installed")
    argv = [sh, "sh", str(program)] if shell == "busybox" else [sh, str(program)]
    r = subprocess.run([*argv, "--numa-balancing", "0", "--thp", "never", "--demotion", "true", "--mark", "begin t1"],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "HARNESS_KMSG": str(tmp_path / "kmsg")})
    assert r.returncode == 0, r.stderr
    got = parse_state_output(r.stdout)
    assert got["numa_balancing"] == "0"
    assert got["demotion"] == "true"
    assert got["thp_defrag"] == "absent"
    assert (tmp_path / "kmsg").read_text() == "numa-harness: begin t1\n"
    # A plain file takes any write; a bad knob value is caught by the host-side mismatch check.
    r = subprocess.run([*argv, "--bogus"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_program_reports_a_refused_write(program, tmp_path):
    sh = shutil.which("busybox")
    if sh is None:
        pytest.skip("busybox not installed")
    target = tmp_path / "sys/kernel/mm/numa/demotion_enabled"
    target.unlink()
    target.mkdir()  # writing to a directory fails like a refused sysfs write
    r = subprocess.run([sh, "sh", str(program), "--demotion", "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    with pytest.raises(GuestStateError, match="knob=demotion"):
        parse_state_output(r.stdout)
