"""pytest sessions under faults: kept VMs (``--keep-vm-on-failure``) are never lost (each has
a name of its own, ``harness status`` lists it and ``harness down`` stops it, under
pytest-xdist and after a SIGKILLed run), and SIGTERM ends a session as Ctrl-C does.

Each runs a real pytest session on a small test file with this test's tag, state root and
temp directory, and asserts (through the ``h`` fixture) that no QEMU is left at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from faultlib import Harness, text, wait_for

from harness.vm.process import pid_alive

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

FAILING = """
    import pytest

    @pytest.mark.topology("numa-basic")
    def test_a(vm):
        assert vm.run("true").exit_status == 1, "deliberate"

    @pytest.mark.topology("numa-basic")
    def test_b(vm):
        assert vm.run("true").exit_status == 1, "deliberate"
"""

WIDE = {"COLUMNS": "250"}  # status's table in full
HANGING = """
    import pytest

    @pytest.mark.topology("numa-basic")
    def test_hangs(vm):
        vm.run("true")
        open("booted", "w").write("")
        import time
        time.sleep(600)
"""


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args]


def session(h: Harness, folder: Path, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "test_kept.py").write_text(textwrap.dedent(body))


def down_all(h: Harness) -> list[str]:
    """``harness down`` every VM in this test's state root; the names it stopped."""
    names = [d.name for d in h.state.iterdir() if (d / "vm.json").exists()] if h.state.exists() else []
    for name in names:
        r = h.run("down", name, timeout=120)
        assert r.returncode == 0, text(r)
    return names


def test_two_xdist_workers_keep_two_vms_and_say_so(h: Harness, tmp_path: Path):
    """Two workers, each with a failing test on the same topology: two VMs, two names, two notes."""
    folder = tmp_path / "suite"
    session(h, folder, FAILING)
    try:
        r = subprocess.run(pytest_argv("--keep-vm-on-failure", "-n", "2", "--dist", "load"), cwd=folder,
                           capture_output=True, text=True, timeout=500, env=h.environ())
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "Traceback" not in out.split("short test summary")[0].split("FAILURES")[0], out
        kept = re.findall(r"harness ssh (pytest-numa-basic-\d+)\b", out)
        assert len(kept) == 2 and len(set(kept)) == 2, out
        status = h.run("status", env=WIDE).stdout.decode()
        rows = [ln for ln in status.splitlines() if any(name in ln for name in kept)]
        assert len(rows) == 2 and all("│ numa-basic" in ln and "running" in ln for ln in rows), status
        assert len(h.qemus()) == 2
        for name in kept:
            r2 = h.run("ssh", name, "--", "echo alive", timeout=120)
            assert r2.returncode == 0 and r2.stdout.decode() == "alive\n", text(r2)
    finally:
        stopped = down_all(h)
    assert sorted(stopped) == sorted(kept)
    assert wait_for(lambda: not h.qemus(), 10)
    assert list(h.state.iterdir()) == []


def test_a_sigkilled_session_leaves_its_vm_to_status_and_down(h: Harness, tmp_path: Path):
    """The run is SIGKILLed mid-test: its VM's state is in the state root (not only in $TMPDIR),
    so ``harness status`` lists it and ``harness down`` stops it."""
    folder = tmp_path / "suite"
    session(h, folder, HANGING)
    err = open(tmp_path / "pytest.out", "wb")
    p = subprocess.Popen(pytest_argv("--keep-vm-on-failure"), cwd=folder, stdout=err, stderr=err,
                         stdin=subprocess.DEVNULL, env=h.environ())
    try:
        assert wait_for(lambda: (folder / "booted").exists(), 300), (tmp_path / "pytest.out").read_text()
        p.kill()
        p.wait(timeout=30)
        time.sleep(1)
        names = [d.name for d in h.state.iterdir() if (d / "vm.json").exists()]
        assert len(names) == 1 and re.fullmatch(rf"pytest-numa-basic-{p.pid}", names[0]), names
        st = h.state_of(names[0])
        assert pid_alive(st["pid"]) and st["pid"] in h.qemus()
        assert Path(st["console_log"]).parent == h.state / names[0]  # not in $TMPDIR
        status = h.run("status", env=WIDE).stdout.decode()
        assert names[0] in status and "running" in status, status
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        err.close()
        down_all(h)
    assert wait_for(lambda: not h.qemus(), 10)
    assert list(h.state.iterdir()) == []


def test_a_session_without_failures_leaves_nothing(h: Harness, tmp_path: Path):
    """Keep on, every test passes: the VM is shut down and its state directory removed."""
    folder = tmp_path / "suite"
    session(h, folder, """
        import pytest

        @pytest.mark.topology("numa-basic")
        def test_ok(vm):
            assert vm.run("true").exit_status == 0
        """)
    r = subprocess.run(pytest_argv("--keep-vm-on-failure"), cwd=folder, capture_output=True, text=True,
                       timeout=400, env=h.environ())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept the" not in r.stdout
    assert not h.state.exists() or list(h.state.iterdir()) == []


def test_sigterm_ends_the_session_with_143_and_no_traceback(h: Harness, tmp_path: Path):
    """SIGTERM while a test runs a guest command: the session stops there (the next test never
    runs), the VM is shut down, exit status 143, no traceback."""
    folder = tmp_path / "suite"
    session(h, folder, """
        import pytest

        @pytest.mark.topology("numa-basic")
        def test_long(vm):
            open("running", "w").write("")
            vm.run("sleep 120", timeout=300)

        @pytest.mark.topology("numa-basic")
        def test_after(vm):
            open("after", "w").write("")
        """)
    out_file = tmp_path / "pytest.out"
    with open(out_file, "wb") as out:
        p = subprocess.Popen(pytest_argv(), cwd=folder, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                             env=h.environ())
        try:
            assert wait_for(lambda: (folder / "running").exists(), 300), out_file.read_text()
            time.sleep(2)
            p.terminate()
            t0 = time.monotonic()
            code = p.wait(timeout=90)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    output = out_file.read_text(errors="replace")
    assert code == 143, output
    assert "Traceback" not in output and "SystemExit" not in output, output
    assert "SIGTERM" in output, output
    assert not (folder / "after").exists(), "the session went on after SIGTERM"
    assert took < 60, took
    assert wait_for(lambda: not h.qemus(), 10)


def test_guest_start_on_a_full_guest_tmp_fails_at_once_naming_it(h: Harness, tmp_path: Path):
    """``guest.start()`` with the guest's /tmp full (shrunk to 8 MiB and filled, as a test that
    wrote too much would leave it): a one-line WorkloadError naming the full /tmp within
    seconds, not after its 300 s timeout; with the space freed it starts again."""
    folder = tmp_path / "suite"
    session(h, folder, """
        import time

        import pytest

        from harness.guest import workloads

        @pytest.mark.topology("numa-basic")
        def test_full_tmp(vm, guest):
            vm.run("mount -o remount,size=8m /tmp && (dd if=/dev/zero of=/tmp/fill bs=64k 2>/dev/null; true)")
            assert vm.run("df -P -k /tmp | awk 'NR == 2 { print $4 }'").stdout.strip() == "0"
            t0 = time.monotonic()
            with pytest.raises(workloads.WorkloadError) as e:
                guest.start(workloads.place(2, hold_until_signal=True), timeout=300)
            open("outcome", "w").write(f"{time.monotonic() - t0:.1f}\\n{str(e.value).splitlines()[0]}\\n")
            vm.run("rm -f /tmp/fill")
            held = guest.start(workloads.place(2, hold_until_signal=True), timeout=300)
            guest.stop(held.pid)
        """)
    r = subprocess.run(pytest_argv(), cwd=folder, capture_output=True, text=True, timeout=500, env=h.environ())
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    took, message = (folder / "outcome").read_text().splitlines()
    assert float(took) < 15, took
    assert "no space left on device: the guest's /tmp is full" in message, message
    assert wait_for(lambda: not h.qemus(), 10)
