"""Why a boot failed, and what an OOM kill is, decided on console logs recorded from real guests.

console_panic_sysrq.log      harness run numa-basic -- 'echo c > /proc/sysrq-trigger'
console_oom_memhog.log       harness run numa-basic -- memhog 1900M   (2 GiB guest, no swap)
console_missing_modules.log  harness run numa-basic --kernel <the default vmlinuz> (no --modules)
console_truncated_kernel.log + qemu_truncated_kernel.log
                             harness run numa-basic --kernel <first 3 MB of that vmlinuz>: QEMU exits 0, says nothing
"""

from pathlib import Path

import pytest

from harness.errors import BootError, CommandFailed, CommandKilled, GuestPanic, HarnessError, KernelProblem
from harness.vm.commands import command_error
from harness.vm.diagnosis import MODULES_HINT, diagnose
from harness.vm.problems import find_kernel_problems, find_oom_kills
from harness.vm.ssh import CommandResult

DATA = Path(__file__).parent / "data"


def log(name: str) -> str:
    return (DATA / name).read_text(errors="replace")


def test_clean_boot_running_is_no_failure():
    assert diagnose(log("console_clean_boot.log"), "", None) is None


def test_panic_is_a_guest_panic_carrying_the_parsed_problem():
    exc = diagnose(log("console_panic_sysrq.log"), "", 0, console_log="/w/console.log")
    assert isinstance(exc, GuestPanic) and isinstance(exc, KernelProblem) and isinstance(exc, BootError)
    assert "Kernel panic - not syncing: sysrq triggered crash" in exc.message
    assert [p.kind for p in exc.problems] == ["panic"]
    assert "/w/console.log" in (exc.detail or "")


def test_truncated_kernel_says_the_image_is_not_bootable():
    exc = diagnose(log("console_truncated_kernel.log"), log("qemu_truncated_kernel.log"), 0)
    assert isinstance(exc, BootError) and not isinstance(exc, KernelProblem)
    assert "before the kernel printed anything" in exc.message
    assert "--kernel" in (exc.hint or "") and "truncated" in (exc.hint or "")


def test_missing_modules_hints_at_modules():
    exc = diagnose(log("console_missing_modules.log"), "", None)
    assert isinstance(exc, BootError)
    assert exc.message == "the guest reported: network FAILED no ethernet interface"
    assert exc.hint == MODULES_HINT


def test_kvm_internal_error_names_tcg():
    exc = diagnose("[    0.000000] Linux version 6.12.0\n", "KVM internal error. Suberror: 1\nextra: 0\n", None)
    assert isinstance(exc, BootError) and "KVM internal error" in exc.message and exc.hint == "use --accel tcg"


def test_qemu_gone_after_kernel_start_is_unexpected_exit():
    text = "\n".join(log("console_clean_boot.log").splitlines()[:50])
    exc = diagnose(text, "qemu-system-x86_64: terminating on signal 9\n", -9)
    assert isinstance(exc, BootError) and exc.message == "QEMU exited unexpectedly (status -9)"
    assert "terminating on signal 9" in (exc.detail or "")


def test_timeout_without_output_suspects_the_image():
    exc = diagnose("", "", None, timed_out="the kernel did not start within 30 s", timeout_hint="slow host?")
    assert isinstance(exc, HarnessError) and exc.message.startswith("the kernel did not start")
    assert "bootable x86_64 bzImage" in (exc.hint or "")


def test_oom_report_is_an_oom_kill_not_a_kernel_problem():
    text = log("console_oom_memhog.log")
    assert find_kernel_problems(text) == []  # its call trace belongs to the OOM report
    (oom,) = find_oom_kills(text)
    assert (oom.process, oom.pid, oom.invoked_by) == ("memhog", 177, "memhog")
    assert (oom.constraint, oom.nodemask, oom.mems_allowed) == ("CONSTRAINT_NONE", "(null)", "0-1")
    assert oom.anon_rss_kb == 1859732
    assert oom.message_line.startswith("Out of memory: Killed process 177 (memhog)")
    assert diagnose(text, "", None) is None


def test_oom_constrained_by_policy_and_a_real_oops_after_it():
    text = log("console_oom_memhog.log").replace("constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1",
                                                 "constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,mems_allowed=0-1")
    text += "\n[   30.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
    (oom,) = find_oom_kills(text)
    assert (oom.constraint, oom.nodemask) == ("CONSTRAINT_MEMORY_POLICY", "1")
    assert [p.kind for p in find_kernel_problems(text)] == ["bug"]


def test_command_killed_by_oom_carries_result_and_kills():
    (oom,) = find_oom_kills(log("console_oom_memhog.log"))
    result = CommandResult("memhog 1900M", 137, "....", "", 3.0, signal="KILL", oom_kills=[oom])
    exc = command_error(result, [oom])
    assert isinstance(exc, CommandKilled) and exc.by_oom_killer and exc.result is result
    assert exc.exit_code == 137 and "OOM killer" in exc.message and "Killed process 177" in exc.message
    assert result.killed_by_oom


def test_command_failed_keeps_status_and_output():
    result = CommandResult("exit 3", 3, "", "boom\n", 0.1)
    exc = command_error(result, [])
    assert type(exc) is CommandFailed and exc.exit_code == 3 and exc.detail == "boom"
    assert command_error(CommandResult("true", 0, "", "", 0.1), []) is None


def test_harness_errors_exit_125():
    assert HarnessError("x").exit_code == 125 and BootError("x").exit_code == 125


@pytest.mark.parametrize("sig,status", [("KILL", 137), ("SEGV", 139)])
def test_signal_status(sig, status):
    from harness.vm.ssh import _signal_status

    assert _signal_status(sig) == status


# --- exit statuses a bisect can use -------------------------------------------------------------

def test_a_panic_at_boot_is_a_bad_kernel_not_a_skip():
    from harness.errors import BAD_KERNEL

    exc = diagnose(log("console_panic_sysrq.log"), "", 0)
    assert exc is not None and exc.exit_code == BAD_KERNEL and BAD_KERNEL not in (0, 125) and 1 <= BAD_KERNEL <= 127


def test_a_kernel_that_never_runs_init_is_bad_but_a_killed_qemu_is_not():
    from harness.errors import BAD_KERNEL, KernelNeverRanInit

    early = "\n".join(log("console_clean_boot.log").splitlines()[:50])
    assert "init running" not in early.lower()
    hung = diagnose(early, "", None, timed_out="init did not run within 60 s")
    assert isinstance(hung, KernelNeverRanInit) and hung.exit_code == BAD_KERNEL
    reset = diagnose(early, "", 0)  # -no-reboot: a reset before init ends QEMU with status 0
    assert isinstance(reset, KernelNeverRanInit) and reset.exit_code == BAD_KERNEL
    killed = diagnose(early, "qemu-system-x86_64: terminating on signal 9\n", -9)
    assert killed is not None and killed.exit_code == 125


def test_a_stall_alone_is_not_a_bad_kernel():
    from harness.vm.problems import Problem

    stall = Problem(kind="stall", line="rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", index=0, start=0)
    assert KernelProblem("stalled", problems=[stall]).exit_code == 125
