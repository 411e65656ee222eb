"""Pure parts of the pytest plugin: problem classification, JSON and dmesg cutting."""

from __future__ import annotations

from harness.plugin.machine import cut_after_mark
from harness.plugin.problems import problem_kind, unexpected_problems
from harness.vm.console import find_kernel_problems

OOM_CONSOLE = """\
[   20.1] memhog invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, oom_score_adj=0
[   20.1] CPU: 1 UID: 0 PID: 312 Comm: memhog Not tainted 6.12.57+deb13-amd64 #1
[   20.1] Call Trace:
[   20.1]  <TASK>
[   20.1]  dump_stack_lvl+0x5d/0x80
[   20.1]  dump_header+0x43/0x1aa
[   20.1]  oom_kill_process.cold+0xa/0xab
[   20.1]  </TASK>
[   20.2] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,global_oom,task_memcg=/,task=memhog,pid=312,uid=0
[   20.2] Out of memory: Killed process 312 (memhog) total-vm:3149932kB, anon-rss:1905664kB
"""

WARN_CONSOLE = """\
[   30.0] ------------[ cut here ]------------
[   30.0] WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:4000 __alloc_pages+0x1/0x2
[   30.0] Call Trace:
[   30.0] ---[ end trace 0000000000000000 ]---
"""


def test_an_oom_report_is_an_oom_not_a_call_trace():
    problems = find_kernel_problems(OOM_CONSOLE)
    assert problems and problem_kind(problems[0]) == "oom"


def test_expected_problems_pass_unexpected_fail():
    oom = find_kernel_problems(OOM_CONSOLE)
    warn = find_kernel_problems(WARN_CONSOLE)
    assert unexpected_problems(oom, {"oom"}) is None
    msg = unexpected_problems(oom + warn, {"oom"})
    assert msg is not None and msg.startswith("guest kernel problem (warning) during the test: WARNING: CPU: 0")
    assert "problem (oom)" in (unexpected_problems(oom, set()) or "")
    assert unexpected_problems([], set()) is None


def test_strict_expectation_must_appear():
    assert unexpected_problems([], {"oom"}) == "the test expected a kernel oom report, and the guest printed none"
    assert unexpected_problems([], {"oom"}, strict=False) is None


def test_dmesg_is_cut_after_the_last_mark():
    text = "a\nnuma-harness: pytest begin 1 x\nb\nnuma-harness: pytest begin 2 y\nc\nd"
    assert cut_after_mark(text, "pytest begin 2 y") == "c\nd"
    assert cut_after_mark(text, "pytest begin 9 z") == text
