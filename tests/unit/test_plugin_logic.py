"""Pure parts of the pytest plugin: which kernel reports fail a test, and dmesg cutting.

The console text is recorded from real guests (tests/unit/data): an OOM kill and a WARN.
"""

from __future__ import annotations

from pathlib import Path

from harness.guest.dmesg import cut_after_mark
from harness.plugin.problems import unexpected_problems
from harness.vm.problems import find_kernel_problems, find_oom_kills

DATA = Path(__file__).parent / "data"

WARN_CONSOLE = """\
[   30.0] ------------[ cut here ]------------
[   30.0] WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:4000 __alloc_pages+0x1/0x2
[   30.0] Call Trace:
[   30.0] ---[ end trace 0000000000000000 ]---
"""


def oom_console() -> str:
    return (DATA / "console_oom_memhog.log").read_text(errors="replace")


def test_an_oom_kill_is_not_a_kernel_problem_but_fails_an_unexpecting_test():
    text = oom_console()
    kills = find_oom_kills(text)
    assert kills
    msg = unexpected_problems(find_kernel_problems(text), kills, set())
    assert msg is not None and msg.startswith("guest kernel OOM kill during the test: ")
    assert unexpected_problems(find_kernel_problems(text), kills, {"oom"}) is None


def test_the_oom_victims_own_allocation_failure_is_expected_with_the_oom():
    """Recorded: pressure filled a 2 GiB guest; after 'Killed process 642 (pressure)' the dying
    victim printed 'page allocation failure' and its stack dump (warn_alloc)."""
    text = (DATA / "console_oom_then_alloc_failure.log").read_text()
    problems, kills = find_kernel_problems(text), find_oom_kills(text)
    assert [k.pid for k in kills] == [642]
    assert [p.kind for p in problems] == ["allocation-failure"]  # its Call Trace is part of it
    assert problems[0].message_line.startswith("pressure: page allocation failure: order:0")
    assert unexpected_problems(problems, kills, {"oom"}) is None
    msg = unexpected_problems(problems, kills, set())
    assert msg is not None and msg.startswith("guest kernel OOM kill during the test: pressure (pid 642)")
    alone = unexpected_problems(problems, [], set())  # no OOM kill: an allocation failure of its own
    assert alone is not None and alone.startswith("guest kernel problem (allocation-failure) during the test")


def test_an_unexpected_warning_fails_even_when_an_oom_was_expected():
    warn = find_kernel_problems(WARN_CONSOLE)
    kills = find_oom_kills(oom_console())
    msg = unexpected_problems(warn, kills, {"oom"})
    assert msg is not None and msg.startswith("guest kernel problem (warning) during the test: WARNING: CPU: 0")
    assert unexpected_problems([], [], set()) is None


def test_strict_expectation_must_appear():
    assert unexpected_problems([], [], {"oom"}) == "the test expected a kernel oom report, and the guest printed none"
    assert unexpected_problems([], [], {"oom"}, strict=False) is None


def test_dmesg_is_cut_after_the_last_mark():
    text = "a\nnuma-harness: pytest begin 1 x\nb\nnuma-harness: pytest begin 2 y\nc\nd"
    assert cut_after_mark(text, "pytest begin 2 y") == "c\nd"
    assert cut_after_mark(text, "pytest begin 9 z") == text


# -- kept VMs' names (--keep-vm-on-failure) ----------------------------------------------------


def test_kept_vm_names_are_per_process_and_valid():
    from harness.plugin.pool import kept_vm_name
    from harness.vm.state import check_vm_name

    assert kept_vm_name("cxl-single", 4242) == "pytest-cxl-single-4242"
    assert kept_vm_name("cxl-single", 1) != kept_vm_name("cxl-single", 2)  # two sessions, two xdist workers
    odd = kept_vm_name("my topo, v2 (" + "x" * 80 + ")", 123456)
    assert check_vm_name(odd) == odd and odd.endswith("-123456") and len(odd) <= 64
