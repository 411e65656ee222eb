"""Live VM lifecycle tests: boot real QEMU (TCG) with the default kernel and guest image.

Boots are kept few (~5-7 s each under TCG): the non-destructive checks share one VM.
Every test also checks that no QEMU it started is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from harness.errors import BootError, CommandFailed, GuestCommandError, GuestPanic, KernelProblem
from harness.vm import console as con
from harness.vm.attached import AttachedVM
from harness.vm.machine import VM, BootSpec, pid_alive

pytestmark = [pytest.mark.live, pytest.mark.timeout(300)]

QEMU = "qemu-system-x86_64"
MACHINE = ["-machine", "q35", "-m", "1G", "-smp", "2", "-accel", "tcg", "-cpu", "max,-hypervisor"]
REPO = Path(__file__).resolve().parents[2]


def qemu_gone(pid: int) -> bool:
    """No live (non-zombie) process with ``pid`` is a qemu-system."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return True
    return not comm.startswith("qemu-system") or not pid_alive(pid)


@pytest.fixture(scope="module")
def guest() -> tuple[Path, Path]:
    """(kernel image, initramfs) of the default guest."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (scripts/install-host-deps)")
    from harness.image.build import build_initramfs
    from harness.kernel.debian import default_kernel

    kernel = default_kernel()
    return kernel.image, build_initramfs(kernel).path


def make_spec(guest: tuple[Path, Path], **kw) -> BootSpec:
    return BootSpec(kw.pop("machine_argv", MACHINE), guest[0], guest[1], **kw)


@pytest.fixture(scope="module")
def vm(guest):
    """One booted VM shared by the non-destructive tests, with the milestones it reported."""
    seen: list[str] = []
    t0 = time.monotonic()
    machine = VM(make_spec(guest), on_milestone=seen.append)
    with machine:
        machine.boot_wall = time.monotonic() - t0  # type: ignore[attr-defined]
        machine.seen_milestones = seen  # type: ignore[attr-defined]
        print(f"\nboot to SSH-ready: {machine.boot_wall:.2f} s (guest {machine.boot_seconds:.2f} s after cont)")
        yield machine
    assert qemu_gone(machine.pid)


def test_boot_milestones_in_order(vm):
    expected = [con.QEMU_UP, con.KERNEL_STARTED, con.INIT_RUNNING, con.MODULES_LOADED, con.NETWORK_UP,
                con.SSHD_READY, con.SSH_READY]
    assert vm.seen_milestones == expected
    assert vm.ssh_port > 0 and vm.pid > 0


def test_run_echo_and_exit_status(vm):
    r = vm.run("echo hi")
    assert (r.exit_status, r.stdout, r.stderr) == (0, "hi\n", "")
    assert vm.run("false", check=False).exit_status == 1
    r = vm.run("echo out; echo err >&2; exit 7", check=False)
    assert (r.exit_status, r.stdout, r.stderr) == (7, "out\n", "err\n")


def test_run_check_raises(vm):
    with pytest.raises(GuestCommandError, match="exited with status 3"):
        vm.run("echo oops-detail >&2; exit 3", check=True)
    with pytest.raises(CommandFailed, match="exited with status 4"):  # check=True is the default
        vm.run("exit 4")


def test_run_timeout(vm):
    t = time.monotonic()
    with pytest.raises(GuestCommandError, match="timed out"):
        vm.run("sleep 30", timeout=1)
    assert time.monotonic() - t < 10
    assert vm.run("echo still-there").stdout == "still-there\n"


def test_guest_sees_harness_cmdline(vm):
    cmdline = vm.run("cat /proc/cmdline").stdout
    assert "console=ttyS0" in cmdline and "panic=-1" in cmdline and "harness.sshkey=" in cmdline


def test_kernel_warning_is_detected_but_not_fatal(vm):
    # A WARN-shaped line in the kernel log: the detector sees the console, so this
    # exercises the whole path (kmsg -> serial -> console.log -> monitor) without
    # needing a module that really warns.
    vm.check_health()
    r = vm.run("echo '------------[ cut here ]------------' > /dev/kmsg; "
               "echo 'WARNING: CPU: 0 PID: 1 at mm/fake.c:1 fake_function+0x0/0x10' > /dev/kmsg")
    assert r.exit_status == 0
    deadline = time.monotonic() + 5
    while not vm.problems() and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(KernelProblem, match="guest kernel warning: WARNING: CPU: 0 PID: 1 at mm/fake.c:1") as e:
        vm.check_health()
    assert not isinstance(e.value, GuestPanic)  # a WARN is a kernel problem, not the fatal kind
    assert [p.kind for p in e.value.problems] == ["warning"]
    assert vm.run("echo alive").stdout == "alive\n"


def test_console_log_has_the_boot(vm):
    text = vm.console_log.read_text(errors="replace")
    assert "Linux version" in text and "numa-harness: sshd ready" in text


def test_panic_during_command_is_reported_promptly(guest):
    with VM(make_spec(guest)) as machine:
        pid = machine.pid
        t = time.monotonic()
        with pytest.raises(GuestPanic) as info:
            machine.run("echo c > /proc/sysrq-trigger", timeout=120)
        elapsed = time.monotonic() - t
    assert elapsed < 30, f"panic took {elapsed:.1f} s to surface"
    assert "Kernel panic - not syncing: sysrq triggered crash" in str(info.value)
    assert "sysrq_handle_crash" in (info.value.detail or "")
    assert qemu_gone(pid)


def test_exception_in_body_leaves_no_qemu(guest):
    pid = 0
    with pytest.raises(RuntimeError, match="body failed"):
        with VM(make_spec(guest)) as machine:
            pid = machine.pid
            assert pid_alive(pid)
            raise RuntimeError("body failed")
    assert pid and qemu_gone(pid)


def test_busy_user_port_is_a_clear_error(guest):
    before = set(_qemu_pids())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        machine = VM(make_spec(guest, ssh_port=port))
        with pytest.raises(BootError) as info:
            machine.start()
    assert str(info.value) == f"port {port} on 127.0.0.1 is busy; choose another with --ssh-port or omit it"
    assert set(_qemu_pids()) <= before


def test_qemu_rejecting_argv_quotes_stderr(guest):
    machine = VM(make_spec(guest, machine_argv=MACHINE + ["-device", "no-such-device-xyz"]))
    with pytest.raises(BootError) as info:
        machine.start()
    text = f"{info.value} {info.value.detail}"
    assert "no-such-device-xyz" in text and "not a valid device model name" in text
    assert not isinstance(info.value, GuestPanic)
    assert qemu_gone(machine.pid)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.vm.machine import VM, BootSpec
    from harness.vm.console import QEMU_UP
    kernel, initrd, mode, workdir = sys.argv[1:5]
    machine = MACHINE_ARGV
    spec = BootSpec(machine, Path(kernel), Path(initrd), workdir=Path(workdir), detach=(mode == "detach"))
    def said(m):
        if m == QEMU_UP:
            print("PID", vm.pid, flush=True)
    vm = VM(spec, on_milestone=said)
    vm.start()
    if mode == "detach":
        vm.write_state()
        vm.close()
        print("UP", flush=True)
        sys.exit(0)
    time.sleep(600)
""")


def _child(guest, mode: str, workdir: Path) -> subprocess.Popen:
    code = CHILD.replace("MACHINE_ARGV", repr(MACHINE))
    return subprocess.Popen([sys.executable, "-c", code, str(guest[0]), str(guest[1]), mode, str(workdir)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_pid(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline()
    assert line.startswith("PID "), f"child said {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
    return int(line.split()[1])


def test_owner_killed_mid_boot_takes_qemu_with_it(guest):
    """SIGKILL (no cleanup at all): PR_SET_PDEATHSIG kills QEMU."""
    with tempfile.TemporaryDirectory(prefix="nh-") as wd:
        proc = _child(guest, "foreground", Path(wd))
        pid = _read_pid(proc)
        assert pid_alive(pid)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 5
        while not qemu_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qemu_gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_boot_stops_qemu_in_order(guest, sig):
    """Ctrl-C / SIGTERM while start() waits: the harness shuts QEMU down and exits."""
    with tempfile.TemporaryDirectory(prefix="nh-") as wd:
        proc = _child(guest, "foreground", Path(wd))
        pid = _read_pid(proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=40)
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in err
        else:
            assert proc.returncode == 128 + signal.SIGTERM, err
        assert qemu_gone(pid)


def test_milestone_timeout_quotes_the_console(guest):
    from harness.vm.machine import Timeouts

    machine = VM(make_spec(guest, timeouts=Timeouts(init_running=1.5)))
    t = time.monotonic()
    with pytest.raises(BootError) as info:
        machine.start()
    assert time.monotonic() - t < 15
    assert "the guest's /init did not start within 1.5 s" in str(info.value)
    assert "last console lines:" in info.value.detail and "Linux version" in machine.console_log.read_text()
    assert qemu_gone(machine.pid)


def test_detached_vm_outlives_its_starter_and_can_be_attached(guest):
    with tempfile.TemporaryDirectory(prefix="nh-") as wd:
        workdir = Path(wd)
        proc = _child(guest, "detach", workdir)
        pid = _read_pid(proc)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "UP" in out, err
        try:
            assert pid_alive(pid), "the background VM died with the process that started it"
            vm = AttachedVM.attach(workdir)
            assert vm.pid == pid
            assert vm.run("echo again").stdout == "again\n"
            vm.run("echo numa-harness-test-marker > /dev/kmsg")
            vm.close()  # lets go; the VM keeps running and logging
            time.sleep(0.5)
            assert pid_alive(pid)
            assert "numa-harness-test-marker" in (workdir / "console.log").read_text(errors="replace")
            _check_interactive_shell(workdir)
            _check_interactive_console(workdir)
            assert pid_alive(pid)
            vm = AttachedVM.attach(workdir)
            vm.shutdown()
            assert qemu_gone(pid)
            assert not (workdir / "vm.json").exists()
        finally:
            if not qemu_gone(pid):
                os.kill(pid, signal.SIGKILL)


def _spawn_attached(workdir: Path, call: str):
    import pexpect

    code = f"import sys; from pathlib import Path; from harness.vm.attached import AttachedVM; vm = AttachedVM.attach(Path({str(workdir)!r})); {call}"
    return pexpect.spawn(sys.executable, ["-c", code], cwd=str(REPO), encoding="utf-8", timeout=30,
                         dimensions=(40, 120))


def _check_interactive_shell(workdir: Path) -> None:
    """vm.shell() on a real pty: typed commands run, the exit status comes back."""
    child = _spawn_attached(workdir, "rc = vm.shell(); vm.close(); print('SHELL-RC', rc); sys.exit(0)")
    child.expect(r"# ")
    child.sendline("echo $((6*7)) cols=$(stty size | cut -d' ' -f2)")
    child.expect(r"42 cols=120")
    child.sendline("exit 3")
    child.expect(r"SHELL-RC 3")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def _check_interactive_console(workdir: Path) -> None:
    """vm.console_interact(): the serial console shell answers; Ctrl-] leaves."""
    child = _spawn_attached(workdir, "vm.console_interact(); vm.close(); print('CONSOLE-LEFT')")
    time.sleep(1)
    child.sendline("")
    child.sendline("echo $((3*4))-on-console")
    child.expect(r"12-on-console")
    child.send("\x1d")
    child.expect(r"CONSOLE-LEFT")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def pexpect_eof():
    import pexpect

    return pexpect.EOF


def test_accel_auto_probe_decides(guest):
    from harness.vm.accel import choose_accel

    t = time.monotonic()
    choice = choose_accel("auto", QEMU, guest[0], guest[1], use_cache=False)
    assert time.monotonic() - t < 40
    assert choice.accel in ("kvm", "tcg")
    if choice.accel == "tcg":
        assert choice.cpu == "max,-hypervisor" and "using TCG" in choice.reason
    print(f"\naccel auto: {choice}")


def _qemu_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "^" + QEMU], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
