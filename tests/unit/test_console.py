"""Pure console logic: kernel problem detection and milestone parsing on real-looking text."""

from pathlib import Path

import pytest

from harness.vm import console as con
from harness.vm import console_log
from harness.vm import problems as prob
from harness.vm.console import parse_milestone
from harness.vm.problems import classify_line, find_kernel_problem, find_kernel_problems

DATA = Path(__file__).parent / "data"
CLEAN_BOOT = (DATA / "console_clean_boot.log").read_text()  # a real boot of Debian 6.12 under TCG

PANIC_SYSRQ = """\
numa-guest:/# [    4.086896] sysrq: Trigger a crash
[    4.087276] Kernel panic - not syncing: sysrq triggered crash
[    4.087803] CPU: 0 UID: 0 PID: 176 Comm: sh Not tainted 6.12.117+deb12-amd64 #1  Debian 6.12.117-1~deb12u1
[    4.088139] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.3-debian-1.16.3-2~bpo12+1 04/01/2014
[    4.088568] Call Trace:
[    4.089363]  <TASK>
[    4.089560]  panic+0x344/0x3a0
[    4.089909]  sysrq_handle_crash+0x1a/0x20
[    4.096577]  </TASK>
[    4.097698] Kernel Offset: 0xd400000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
"""

OOPS_NULL = """\
[   12.345678] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   12.345900] #PF: supervisor read access in kernel mode
[   12.346000] #PF: error_code(0x0000) - not-present page
[   12.346100] PGD 0 P4D 0
[   12.346200] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.346300] CPU: 1 UID: 0 PID: 201 Comm: insmod Tainted: G           OE      6.12.95 #1
[   12.346400] RIP: 0010:node_private_test_init+0x15/0x30 [nodetest]
[   12.346500] Call Trace:
[   12.346600]  <TASK>
[   12.346700]  do_one_initcall+0x5b/0x310
[   12.346800]  </TASK>
[   12.346900] ---[ end trace 0000000000000000 ]---
"""

WARN = """\
[    7.100000] ------------[ cut here ]------------
[    7.100100] WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:4700 __alloc_pages_noprof+0x2d1/0x330
[    7.100200] Modules linked in: cxl_mem cxl_pci cxl_acpi
[    7.100300] CPU: 0 UID: 0 PID: 1 Comm: sh Not tainted 6.12.95 #1
[    7.100400] RIP: 0010:__alloc_pages_noprof+0x2d1/0x330
[    7.100500] Call Trace:
[    7.100600]  <TASK>
[    7.100700]  </TASK>
[    7.100800] ---[ end trace 0000000000000000 ]---
"""

BUG_SLEEPING = """\
[   20.000000] BUG: sleeping function called from invalid context at mm/migrate.c:1234
[   20.000100] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 300, name: migratepages
[   20.000200] Call Trace:
[   20.000300]  <TASK>
[   20.000400]  dump_stack_lvl+0x5d/0x80
"""

GPF_THEN_PANIC = """\
[    9.000000] Oops: general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI
[    9.000100] CPU: 0 UID: 0 PID: 90 Comm: kworker/0:2 Not tainted 6.12.95 #1
[    9.000200] Call Trace:
[    9.000300]  <IRQ>
[    9.000400] ---[ end trace 0000000000000000 ]---
[    9.000500] Kernel panic - not syncing: Fatal exception in interrupt
[    9.000600] Kernel Offset: disabled
[    9.000700] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---
"""

# Lines seen on healthy boots that must not count as kernel problems.
NOT_PROBLEMS = [
    "[    0.412345] ACPI BIOS Error (bug): Could not resolve symbol [\\_SB.PCI0.S08], AE_NOT_FOUND (20240827/dswload2-162)",
    "[    0.412399] ACPI Error: AE_NOT_FOUND, During name lookup/catalog (20240827/psobject-220)",
    "[    0.100000] RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!",
    "[    1.191847] PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug",
    "[    2.362253] RAS: Correctable Errors collector initialized.",
    "DEBUG: the test printed this",
    "numa-harness: modprobe FAILED cxl_mem",
    "[    0.000000] MDS CPU bug present and SMT on, data leak possible.",
]


def test_clean_real_boot_has_no_problem():
    assert find_kernel_problems(CLEAN_BOOT) == []


@pytest.mark.parametrize("line", NOT_PROBLEMS)
def test_benign_lines_do_not_match(line):
    assert classify_line(line) is None


def test_sysrq_panic_is_one_fatal_problem_with_excerpt():
    problems = find_kernel_problems(PANIC_SYSRQ)
    assert len(problems) == 1  # the panic's own Call Trace is part of it
    p = problems[0]
    assert p.kind == prob.PANIC and p.fatal
    assert p.message_line == "Kernel panic - not syncing: sysrq triggered crash"
    assert p.excerpt.splitlines()[0].endswith("sysrq triggered crash")
    assert "sysrq_handle_crash" in p.excerpt


def test_oops_keeps_the_bug_line_and_is_not_fatal():
    p = find_kernel_problem(OOPS_NULL)
    assert p is not None and p.kind == prob.OOPS and not p.fatal
    assert p.message_line.startswith("BUG: kernel NULL pointer dereference")
    assert len(find_kernel_problems(OOPS_NULL)) == 1


def test_warning_replaces_cut_here_marker():
    problems = find_kernel_problems(WARN)
    assert [p.kind for p in problems] == [prob.WARNING]
    assert problems[0].message_line.startswith("WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:4700")
    assert problems[0].excerpt.splitlines()[0].endswith("[ cut here ]------------")


def test_bug_sleeping_function():
    p = find_kernel_problem(BUG_SLEEPING)
    assert p is not None and p.kind == prob.BUG


def test_panic_wins_over_the_oops_that_caused_it():
    problems = find_kernel_problems(GPF_THEN_PANIC)
    assert [p.kind for p in problems] == [prob.OOPS, prob.PANIC]
    main = find_kernel_problem(GPF_THEN_PANIC)
    assert main is not None and main.kind == prob.PANIC
    msg, detail = prob.describe_problems(problems)
    assert msg.startswith("guest kernel panic: Kernel panic - not syncing: Fatal exception in interrupt")
    assert "general protection fault" in msg
    assert "non-canonical address" in detail


def test_problem_inside_clean_boot_is_found():
    text = CLEAN_BOOT + WARN
    problems = find_kernel_problems(text)
    assert len(problems) == 1 and problems[0].kind == prob.WARNING


def test_excerpt_is_line_plus_twenty_following():
    text = "[ 1.0] BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]\n" + "".join(f"[ 1.{i}] l{i}\n" for i in range(1, 40))
    p = find_kernel_problem(text)
    assert p is not None
    assert len(p.excerpt.splitlines()) == 1 + prob.EXCERPT_AFTER


def test_separate_reports_are_separate_problems():
    problems = find_kernel_problems(WARN + CLEAN_BOOT[:2000] + BUG_SLEEPING)
    assert [p.kind for p in problems] == [prob.WARNING, prob.BUG]


def test_carriage_returns_and_ansi_are_cleaned():
    assert con.clean_line("\x1b[6n[    4.0] Oops: 0000 [#1]\r") == "[    4.0] Oops: 0000 [#1]"
    assert find_kernel_problem("numa-guest:/# \x1b[6n[    4.086896] sysrq: x\r\n[ 4.1] Kernel panic - not syncing: x\r\n")


@pytest.mark.parametrize("line,milestone", [
    ("[    0.000000] Linux version 6.12.117+deb12-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-12)",
     con.KERNEL_STARTED),
    ("numa-harness: init running", con.INIT_RUNNING),
    ("numa-harness: modules loaded (7)", con.MODULES_LOADED),
    ("numa-harness: network up 10.0.2.15", con.NETWORK_UP),
    ("numa-harness: sshd ready port 22", con.SSHD_READY),
    ("numa-harness: console shell", None),
    ("numa-harness: modprobe FAILED cxl_mem", None),
    ("numa-harness: network FAILED no ethernet interface", None),
    ("[    0.000000] Command line: console=ttyS0 harness.modules=a,b", None),
    ("random text", None),
])
def test_parse_milestone(line, milestone):
    assert parse_milestone(line) == milestone


def test_milestones_in_real_boot_in_order():
    seen = [m for m in (parse_milestone(con.clean_line(line)) for line in CLEAN_BOOT.splitlines()) if m]
    assert seen == [con.KERNEL_STARTED, con.INIT_RUNNING, con.MODULES_LOADED, con.NETWORK_UP, con.SSHD_READY]


def test_guest_failures():
    assert con.is_guest_failure("numa-harness: modprobe FAILED cxl_mem")
    assert con.is_guest_failure("numa-harness: sshd FAILED dropbear is not listening on port 22")
    assert not con.is_guest_failure("numa-harness: sshd ready port 22")
    assert not con.is_guest_failure("[ 1.0] ACPI Error: x")


def test_monitor_follows_a_growing_log(tmp_path):
    log = tmp_path / "console.log"
    seen = []
    mon = console_log.ConsoleMonitor(log, on_milestone=seen.append)
    assert not mon.poll()  # no file yet
    log.write_text("[ 0.0] Linux version 6.12.1 (x)\nnuma-harness: init run")
    mon.poll()
    assert seen == [con.KERNEL_STARTED]
    assert mon.tail(5).endswith("numa-harness: init run")  # partial line is shown
    with open(log, "a") as f:
        f.write("ning\n" + WARN)
    mon.poll()
    assert seen == [con.KERNEL_STARTED, con.INIT_RUNNING]
    assert mon.problem_count == 1 and mon.problems()[0].kind == prob.WARNING
    assert mon.problems(since=1) == []


# -- milestones on a garbled console ------------------------------------------------------------

#: A real boot of a 7.2 kernel whose ``init running`` line is cut by a kernel record, as the
#: 7.2 console that failed a boot recorded it (``numa-harness: in[    1.998473] tsc: Refined
#: TSC ... it running``); the record is the boot's own ``tsc:`` line.
INTERLEAVED_7_2 = (DATA / "console_interleaved_init_7.2.log").read_text()
ALL_CONSOLE = [con.KERNEL_STARTED, con.INIT_RUNNING, con.MODULES_LOADED, con.NETWORK_UP, con.SSHD_READY]


def test_the_recorded_interleaved_line_is_missed_line_by_line():
    """The file really holds the case: no single line of it announces ``init running``."""
    per_line = {parse_milestone(con.clean_line(ln)) for ln in INTERLEAVED_7_2.splitlines()}
    assert con.INIT_RUNNING not in per_line
    assert con.SSHD_READY in per_line


def test_the_recorded_interleaved_console_shows_every_milestone():
    assert con.milestones_in(INTERLEAVED_7_2) == ALL_CONSOLE
    assert "numa-harness: init running" in con.guest_lines(INTERLEAVED_7_2)


def test_monitor_on_the_recorded_interleaved_console(tmp_path):
    log = tmp_path / "console.log"
    log.write_text(INTERLEAVED_7_2)
    seen: list[str] = []
    mon = console_log.ConsoleMonitor(log, on_milestone=seen.append)
    mon.poll()
    assert seen == ALL_CONSOLE
    assert mon.seen(con.INIT_RUNNING)
    assert mon.guest_failures() == []


def test_a_later_milestone_implies_the_earlier_ones(tmp_path):
    """The init line lost altogether (cut and never finished): ``sshd ready`` still proves it."""
    assert con.implied_milestones(con.SSHD_READY) == (con.KERNEL_STARTED, con.INIT_RUNNING, con.MODULES_LOADED,
                                                       con.NETWORK_UP, con.SSHD_READY)
    assert con.implied_milestones(con.KERNEL_STARTED) == (con.KERNEL_STARTED,)
    assert con.implied_milestones(con.SSH_READY) == (con.SSH_READY,)
    assert con.implied_milestones(con.QEMU_UP) == (con.QEMU_UP,)
    log = tmp_path / "console.log"
    seen: list[str] = []
    mon = console_log.ConsoleMonitor(log, on_milestone=seen.append)
    log.write_text("[    0.000000] Linux version 7.2.13 (x)\nnuma-harness: in[    1.99] tsc: x it running\n"
                   "numa-harness: modules loaded (5)\n")
    mon.poll()
    assert seen == [con.KERNEL_STARTED, con.INIT_RUNNING, con.MODULES_LOADED]
    with open(log, "a") as f:
        f.write("numa-harness: sshd ready port 22\n")
    mon.poll()
    assert seen == [con.KERNEL_STARTED, con.INIT_RUNNING, con.MODULES_LOADED, con.NETWORK_UP, con.SSHD_READY]


@pytest.mark.parametrize("lines,joined", [
    # cut by one record, the rest on the next line
    (["numa-harness: in[    1.99] tsc: Refined TSC", "it running"], ["numa-harness: init running"]),
    # cut by several records
    (["numa-harness: net[ 3.1] a", "[ 3.2] b", "[ 3.3] c", "work up 10.0.2.15"], ["numa-harness: network up 10.0.2.15"]),
    # cut inside the prefix, and cut twice
    (["numa-har[ 3.1] a", "ness: sshd re[ 3.2] b", "ady port 22"], ["numa-harness: sshd ready port 22"]),
    # a record between the text and its line end: the empty rest ends it
    (["numa-harness: init running[ 1.9] x", ""], ["numa-harness: init running"]),
    # another guest line before the rest came: the start stays a fragment, the new line is whole
    (["numa-harness: in[ 1.9] x", "numa-harness: network FAILED no ethernet interface"],
     ["numa-harness: in", "numa-harness: network FAILED no ethernet interface"]),
    # kernel records alone are not guest lines
    (["[ 1.0] numa-harness: contract mark", "plain"], ["plain"]),
])
def test_guest_line_joiner(lines, joined):
    j = con.GuestLineJoiner()
    assert [g for ln in lines for g in j.feed(ln)] == joined


def test_guest_line_joiner_gives_up_a_start_after_many_records():
    j = con.GuestLineJoiner()
    assert j.feed("numa-harness: in[ 1.0] x") == []
    out = [g for i in range(con.MAX_INTERLEAVED + 1) for g in j.feed(f"[ 2.{i}] y")]
    assert out == ["numa-harness: in"]
    assert j.feed("later") == ["later"]


def test_a_garbled_failure_line_is_still_a_fatal_guest_failure():
    from harness.vm import diagnosis

    console = ("[    0.0] Linux version 7.2.13 (x)\nnuma-harness: init running\n"
               "numa-harness: network FAI[    4.1] virtio_net: x\n[    4.2] y\nLED no ethernet interface\n")
    assert diagnosis.fatal_guest_failure(console) == "network FAILED no ethernet interface"
