"""``files/hold.sh`` run on the host (busybox and dash) and :mod:`harness.guest.background` parsing what it
prints: a program that reports and holds, one that exits first (its status and stderr kept), one killed by
a signal, one that never reports (killed at the time limit), and stopping a held one."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from harness.guest import background as bg
from harness.guest import workloads as w
from harness.resources import guest_files_dir

HOLD = guest_files_dir() / "hold.sh"
DATA = Path(__file__).parent / "data" / "guest-programs"


class HostShell:
    """Runs the guest command lines ``background`` builds on this host, ``hold`` being the source file."""

    def __init__(self, sh: list[str]) -> None:
        self.sh = sh

    def run(self, command: str, *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        argv = shlex.split(command)
        assert argv[0] == bg.HOLD
        r = subprocess.run([*self.sh, str(HOLD), *argv[1:]], capture_output=True, text=True, timeout=timeout)
        r.exit_status = r.returncode  # type: ignore[attr-defined]
        return r


@pytest.fixture
def shell(guest_sh, tmp_path, monkeypatch) -> HostShell:
    monkeypatch.setattr(bg, "GUEST_RUN_DIR", str(tmp_path / "run"))
    return HostShell(guest_sh)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def test_a_holding_program_reports_and_is_stopped(shell, tmp_path):
    report = (DATA / "place-bind1.json").read_text().strip()
    cmd = f"sh -c {shlex.quote(f'echo {shlex.quote(report)}; echo noise >&2; exec sleep 60')}"
    started = bg.start(shell, cmd, timeout=20)
    assert isinstance(started.report, w.PlaceResult) and started.report.placement.on(1) == 4096
    assert alive(started.pid)
    bg.stop(shell, started.pid, timeout=10)
    assert not alive(started.pid)


def test_a_program_that_exits_first_keeps_its_status_and_stderr(shell):
    progress = '{"step": 1, "allocated_mib": 16}'
    run = bg.launch(shell, f"sh -c {shlex.quote(f'echo {shlex.quote(progress)} >&2; exit 3')}", timeout=20)
    assert (run.state, run.rc, run.report) == ("exited", 3, None)
    assert progress in run.err
    with pytest.raises(w.WorkloadError, match="exited before reporting .status 3."):
        bg.start(shell, "sh -c 'exit 3'", timeout=20)


def test_a_program_killed_by_a_signal_reports_128_plus_it(shell):
    run = bg.launch(shell, "sh -c 'kill -9 $$'", timeout=20)
    assert (run.state, run.rc) == ("exited", 137)


def test_a_program_that_never_reports_is_killed_at_the_limit(shell):
    t0 = time.monotonic()
    run = bg.launch(shell, "sleep 60", timeout=1)
    assert run.state == "timeout" and time.monotonic() - t0 < 20
    assert not alive(run.pid)
    with pytest.raises(w.WorkloadError, match="did not report within 1 s"):
        bg.start(shell, "sleep 60", timeout=1)


def test_parse_start_output():
    text = "hold pid=42 state=exited rc=137\n@@ out\n@@ err\nKilled\n"
    got = bg.parse_start("cmd", text)
    assert (got.pid, got.state, got.rc, got.out, got.err) == (42, "exited", 137, "", "Killed\n")
    assert bg.parse_start("cmd", "hold pid=7 state=timeout rc=-\n@@ out\n@@ err\n").rc is None
    with pytest.raises(w.WorkloadError, match="could not start"):
        bg.parse_start("cmd", "error step=usage file=hold msg=usage: ...\n")
    assert bg.start_command("/tmp/x/bg-1", "place --size 4", 2.5) == f"{bg.HOLD} start /tmp/x/bg-1 3 'place --size 4'"
    assert bg.stop_command(42, 60) == f"{bg.HOLD} stop 42 60"


def test_how_far_a_pressure_got_before_it_ended():
    err = (DATA / "pressure-node1.stderr").read_text()
    run = bg.Launch("pressure ...", 1, "exited", 137, "", err)
    assert run.progress_mib() == w.parse_pressure_progress(err)[-1].allocated_mib > 0


def test_hold_refuses_at_once_where_there_is_no_space(shell, tmp_path, monkeypatch):
    """The run directory on a full filesystem (a 32 kB tmpfs, filled): one line naming it, at
    once, not after the program's whole timeout."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mnt)], check=True)
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mnt}/fill", "bs=4k"], capture_output=True)
        monkeypatch.setattr(bg, "GUEST_RUN_DIR", str(mnt / "run"))
        t0 = time.monotonic()
        with pytest.raises(w.WorkloadError) as e:
            bg.start(shell, "sh -c 'sleep 60'", timeout=300)
        assert time.monotonic() - t0 < 10
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    assert f"no space left on device: the guest's {mnt} is full (0 kB free)" in str(e.value)


class Answers:
    """A guest runner that answers every command with one text (what ``hold start`` printed)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def run(self, command: str, *, timeout: float = 60, check: bool = True):
        return subprocess.CompletedProcess([command], 0, self.text, "")


def test_a_program_that_could_not_write_its_report_is_said_to_have_met_a_full_disk():
    text = "hold pid=7 state=exited rc=74 full=/tmp\n@@ out\n@@ err\n"
    assert bg.parse_start("cmd", text).full == "/tmp"
    with pytest.raises(w.WorkloadError, match=r"no space left on device \(the guest's /tmp is full\)"):
        bg.start(Answers(text), "place --size 4", timeout=300)
    assert bg.parse_start("cmd", "hold pid=7 state=exited rc=\n@@ out\n@@ err\n").rc is None
