"""A stall on the console while booting ends the boot wait at once, with its excerpt.

console_rcu_stall_constructed.log is CONSTRUCTED, not recorded: the kernel lines of a real
Debian 6.12 TCG boot up to /init, followed by an RCU stall report written line by line in
the formats of the 6.12 kernel's kernel/rcu/tree_stall.h (``rcu: INFO: %s detected stalls on
CPUs/tasks:``, the per-CPU ``\\t%d-%c%c%c%c: (...) idle=...`` lines, ``\\t(detected by %d, t=%ld
jiffies, g=%ld, q=%lu ncpus=%d)``, the ``kthread starved`` report). Provoking a real one
cheaply failed here: the 4-vCPU two-switch topology with multi-threaded TCG booted 5 times
of 5 (also pinned to one host core, also with rcu_cpu_stall_timeout=3) on the day.
The soft-lockup line below is likewise built from kernel/watchdog.c's format.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.errors import GuestPanic
from harness.vm import console as con
from harness.vm import problems as prob
from harness.vm.console_log import ConsoleMonitor
from harness.vm.diagnosis import boot_stall_error, tcg_starved_hint
from harness.vm.follow import BootFollower
from harness.vm.problems import classify_line, find_kernel_problems

DATA = Path(__file__).parent / "data"
STALL_LOG = (DATA / "console_rcu_stall_constructed.log").read_text()
CLEAN_BOOT = (DATA / "console_clean_boot.log").read_text()

SOFT_LOCKUP = """\
[   48.120551] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [swapper/0:1]
[   48.121380] Modules linked in: virtio_net net_failover failover
[   48.122210] CPU: 1 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.117+deb12-amd64 #1  Debian 6.12.117-1~deb12u1
[   48.123040] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.3-debian-1.16.3-2~bpo12+1 04/01/2014
[   48.123870] RIP: 0010:smp_call_function_many_cond+0x12e/0x560
[   48.124700] Call Trace:
[   48.125530]  <TASK>
[   48.126360]  on_each_cpu_cond_mask+0x24/0x40
[   48.127190]  </TASK>
"""


@pytest.mark.parametrize("line", [
    "[   21.842113] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "[   21.842113] rcu: INFO: rcu_preempt self-detected stall on CPU",
    "[   21.842113] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 2-... } 5252 jiffies s: 97 root: 0x4/.",
    "[  130.000000] INFO: rcu_tasks detected stalls on tasks:",
    "[   48.120551] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [swapper/0:1]",
    "[   48.120551] watchdog: Watchdog detected hard LOCKUP on cpu 3",
    "[  243.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
])
def test_stall_lines_are_stalls(line):
    assert classify_line(line) == prob.STALL


def test_other_bugs_stay_bugs():
    assert classify_line("[ 1.0] BUG: kernel NULL pointer dereference, address: 0000000000000008") == prob.BUG
    assert classify_line("[ 1.0] BUG: sleeping function called from invalid context at mm/slab.h:1") == prob.BUG


def test_rcu_stall_report_is_one_problem_with_its_detail():
    problems = find_kernel_problems(STALL_LOG)
    assert [p.kind for p in problems] == [prob.STALL], "the GP kthread's call trace belongs to the stall"
    p = problems[0]
    assert p.message_line == "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
    assert "(detected by 0, t=5252 jiffies, g=1805, q=211 ncpus=4)" in p.excerpt
    assert "2-...!: (1 GPs behind)" in p.excerpt


def test_boot_stall_error_under_multi_threaded_tcg_points_at_thread_single():
    exc = boot_stall_error(find_kernel_problems(STALL_LOG), accel="tcg,thread=multi", console_log="/w/console.log")
    assert isinstance(exc, GuestPanic)
    assert exc.message == "guest kernel stall: rcu: INFO: rcu_preempt detected stalls on CPUs/tasks: (while booting)"
    assert exc.hint is not None and "--tcg-thread single" in exc.hint
    assert "ncpus=4" in (exc.detail or "") and "(console log: /w/console.log)" in (exc.detail or "")


def test_boot_stall_hint_without_multi_threaded_tcg():
    assert "--tcg-thread" not in tcg_starved_hint("tcg,thread=single")
    assert "--tcg-thread" not in tcg_starved_hint("kvm")
    assert "--tcg-thread" in tcg_starved_hint("tcg")  # QEMU's default for TCG is multi-threaded


def test_soft_lockup_ends_a_boot_but_a_warning_does_not():
    exc = boot_stall_error(find_kernel_problems(SOFT_LOCKUP), accel="tcg,thread=multi")
    assert exc is not None and "soft lockup - CPU#1 stuck for 26s!" in exc.message
    warn = "[ 3.0] ------------[ cut here ]------------\n[ 3.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2\n"
    assert find_kernel_problems(warn) and boot_stall_error(find_kernel_problems(warn)) is None
    assert boot_stall_error(find_kernel_problems(CLEAN_BOOT)) is None


def test_boot_wait_ends_at_the_stall_not_at_the_deadline(tmp_path):
    """The follower waits for sshd (deadline 60 s) on a console that shows the stall after
    half a second: it raises the stall within a few seconds, with the report's lines."""
    log = tmp_path / "console.log"
    lines = STALL_LOG.splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if "detected stalls" in ln)
    log.write_text("".join(lines[:cut]))

    def rest() -> None:
        time.sleep(0.5)
        with open(log, "a") as f:
            for ln in lines[cut:]:  # the report arrives line by line, as a serial console writes it
                f.write(ln)
                f.flush()
                time.sleep(0.01)

    mon = ConsoleMonitor(log)
    mon.start()
    follower = BootFollower(mon, qemu_log=tmp_path / "qemu.log", console_log=log, alive=lambda: True,
                            exit_status=lambda: None, wait_exit=lambda _t: False, timeout_hint=lambda: "slow host",
                            accel="tcg,thread=multi")
    writer = threading.Thread(target=rest)
    writer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(GuestPanic) as ei:
            follower.await_milestone(con.SSHD_READY, time.monotonic() + 60, 60, "the guest's sshd did not start")
    finally:
        writer.join()
        mon.stop()
    assert time.monotonic() - t0 < 10
    assert "rcu_preempt detected stalls" in ei.value.message
    assert "kthread starved for 5253 jiffies" in (ei.value.detail or ""), "the excerpt waited for the report"
