"""harness.selftest.ktap on recorded real output and on the grammar's edge cases.

data/ktap/: host-*.tap are tests/data/ktap/*.sh run with bash on the host;
kselftest-*.tap are linux 6.12's mm/migration selftest (built statically) run
alone and through kselftest's runner.sh on a one-node host; kunit-*.log are
the kernel's own recorded KUnit logs (tools/testing/kunit/test_data).
"""

from pathlib import Path

import pytest

from harness.selftest.ktap import parse_ktap

DATA = Path(__file__).parent / "data" / "ktap"


def read(name: str) -> str:
    return (DATA / name).read_text()


def statuses(rep):
    return [(r.number, r.name, r.status) for r in rep.results]


def test_ktap_helpers_output():
    rep = parse_ktap(read("host-ktap_nodes.tap"))
    assert rep.version == "TAP version 13" and rep.plan == 3
    assert statuses(rep) == [(1, "node0 has meminfo", "pass"), (2, "node0 is online", "pass"),
                             (3, "private-node masks", "skip")]
    assert rep.results[0].diagnostics == ["node0: Node 0 MemTotal: 9005260 kB"]
    assert rep.results[2].reason == ""
    assert rep.totals == {"pass": 2, "fail": 0, "xfail": 0, "xpass": 0, "skip": 1, "error": 0}
    assert not rep.failed and not rep.errors


def test_skip_all_plan():
    rep = parse_ktap(read("host-ktap_skip.tap"))
    assert rep.plan == 0 and rep.skip_all == "no private memory nodes: the kernel has no has_public_memory mask"
    assert rep.results == [] and not rep.failed and not rep.errors


def test_fail_todo_and_xfail():
    rep = parse_ktap(read("host-ktap_fail.tap"))
    assert rep.version == "KTAP version 1"
    assert statuses(rep) == [(1, "at least one node", "pass"), (2, "64 nodes", "fail"),
                             (3, "weighted interleave by bandwidth", "todo"),
                             (4, "demotion without a target", "xfail")]
    assert rep.results[1].diagnostics == ["expected 64 nodes, found 1"]
    assert rep.results[2].reason == "not written yet" and rep.results[3].reason == "no lower tier on this machine"
    assert rep.failed


def test_nested_subtests_from_a_script():
    rep = parse_ktap(read("host-ktap_nested.tap"))
    (node0,) = rep.results
    assert node0.name == "node0" and node0.status == "pass"
    sub = node0.subtests
    assert sub is not None and sub.version == "KTAP version 1" and sub.name == "node0" and sub.plan == 4
    assert [r.name for r in sub.results] == ["meminfo", "numastat", "distance", "cpulist"]
    assert [("/".join(p), r.status) for p, r in rep.walk()][-2:] == [("node0/cpulist", "pass"), ("node0", "pass")]


def test_kselftest_harness_output_skips_with_reasons():
    rep = parse_ktap(read("kselftest-migration-1node.tap"))
    assert rep.plan == 6 and len(rep.results) == 6
    assert {r.status for r in rep.results} == {"skip"}
    assert rep.results[0].name == "migration.private_anon"
    assert rep.results[0].reason == "Not enough threads or NUMA nodes available"
    assert "RUN           migration.private_anon ..." in rep.results[0].diagnostics
    assert rep.totals["skip"] == 6 and not rep.failed


def test_kselftest_runner_nests_a_test_with_a_hash_prefix():
    rep = parse_ktap(read("kselftest-runner-migration.tap"))
    (top,) = rep.results
    assert top.name == "selftests: /work/ksrc/kst/mm: migration" and top.status == "pass"
    assert top.subtests is not None and top.subtests.plan == 6
    assert [r.reason for r in top.subtests.results] == ["Not enough threads or NUMA nodes available"] * 6
    assert top.subtests.totals["skip"] == 6
    paths = [p for p, _ in rep.walk()]
    assert paths[0] == ("selftests: /work/ksrc/kst/mm: migration", "migration.private_anon")


def test_kunit_nested_with_interrupting_output():
    rep = parse_ktap(read("kunit-test_is_test_passed-all_passed_nested.log"))
    assert rep.version == "TAP version 14" and statuses(rep) == [(1, "sysctl_test", "pass"), (2, "example", "pass")]
    sysctl = rep.results[0].subtests
    assert sysctl is not None and sysctl.name == "sysctl_test" and len(sysctl.results) == 4
    inner = sysctl.results[1].subtests
    assert inner is not None and [r.name for r in inner.results] == ["example_simple_test", "example_mock_test"]
    assert not rep.errors


def test_kunit_skip_with_reason():
    rep = parse_ktap(read("kunit-test_skip_tests.log"))
    example = rep.results[1].subtests
    assert example is not None
    assert (example.results[1].status, example.results[1].reason) == ("skip", "this test should be skipped")


def test_kunit_failure():
    rep = parse_ktap(read("kunit-test_is_test_passed-failure.log"))
    assert rep.failed
    failed = ["/".join(p) for p, r in rep.walk() if r.status == "fail"]
    assert failed == ["example/example_simple_test", "example"]


def test_kunit_from_dmesg_with_other_kernel_lines_in_between():
    rep = parse_ktap(read("kunit-test_interrupted_tap_output.log"), dmesg=True)
    assert rep.plan == 3
    res = rep.results[0].subtests
    assert res is not None and [r.number for r in res.results] == [1, 2, 3, 4, 5]


def test_kselftest_membarrier_and_two_space_indentation():
    rep = parse_ktap(read("kunit-test_is_test_passed-kselftest.log"))
    assert [len(r.subtests.results) for r in rep.results if r.subtests] == [2, 2]
    rep = parse_ktap(read("kunit-test_parse_ktap_output.log"))
    sub = rep.results[0].subtests
    assert sub is not None and [r.name for r in sub.results] == ["case_1", "case_2", "case_3"]


# --- edge cases -------------------------------------------------------------------


def test_bail_out_fails_the_run():
    rep = parse_ktap("TAP version 13\n1..3\nok 1 a\nBail out! no CXL device\n# Totals: pass:1\n")
    assert rep.bail_out == "no CXL device" and rep.failed and rep.missing == 2


def test_a_crash_part_way_leaves_tests_missing():
    rep = parse_ktap("KTAP version 1\n1..3\nok 1 a\nSegmentation fault\n")
    assert rep.missing == 2 and rep.failed and rep.errors == ["planned 3 tests, saw 1"]
    assert rep.log == ["Segmentation fault"]


def test_subtests_without_their_parent_line_are_a_failed_result():
    rep = parse_ktap("KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: s\n    1..2\n    ok 1 x\n")
    (r,) = rep.results
    assert r.name == "s" and r.status == "fail" and r.subtests is not None and r.subtests.missing == 1


def test_a_parent_ok_over_a_failed_child_is_a_failure():
    rep = parse_ktap("KTAP version 1\n1..1\n    1..1\n    not ok 1 child\nok 1 parent\n")
    assert rep.results[0].status == "fail"


@pytest.mark.parametrize("line,name,status,reason", [
    ("ok 1 - with hyphen", "with hyphen", "pass", ""),
    ("ok 2 # SKIP no name, a reason", "", "skip", "no name, a reason"),
    ("ok 3 lower # skip why", "lower", "skip", "why"),
    ("not ok 4 # error ENOMEM", "", "error", "ENOMEM"),
    ("ok 5 x # XPASS", "x", "xpass", ""),
    ("not ok 6 y # XFAIL", "y", "fail", ""),
    ("ok 7 counts # of pages", "counts # of pages", "pass", ""),
    ("ok 8 Skipped # SKIPPED: too small", "Skipped", "skip", "too small"),
])
def test_result_lines(line, name, status, reason):
    rep = parse_ktap(f"KTAP version 1\n1..1\n{line}\n")
    r = rep.results[0]
    assert (r.name, r.status, r.reason) == (name, status, reason)


def test_out_of_order_numbers_and_a_second_plan_are_reported():
    rep = parse_ktap("TAP version 13\n1..2\nok 2 b\n1..2\nok 3 c\n")
    assert rep.errors[:2] == ["line 3: test number 2, expected 1", "line 4: a second plan '1..2'"]


def test_no_ktap_at_all():
    rep = parse_ktap("hello\nworld\n")
    assert rep.version is None and rep.plan is None and rep.results == [] and rep.log == ["hello", "world"]
    assert not rep.failed


def test_lines_may_be_an_iterable_with_newlines_and_crlf():
    rep = parse_ktap(["TAP version 13\r\n", "1..1\n", "ok 1 a\r\n"])
    assert statuses(rep) == [(1, "a", "pass")]


def test_kselftest_migration_from_a_real_guest():
    """linux-source-6.12 mm/migration (static) run by `harness selftest` on a 2-node, 3-vCPU guest
    of the stock 6.12 kernel, 64 hugepages reserved: the shared hugetlb case fails there."""
    rep = parse_ktap(read("guest-migration-numa3cpu.tap"))
    assert [r.status for r in rep.results] == ["pass"] * 5 + ["fail"]
    bad = rep.results[5]
    assert bad.name == "migration.shared_anon_htlb"
    assert "migration.c:310:shared_anon_htlb:Expected migrate(ptr, self->n1, self->n2) (-2) == 0 (0)" in bad.diagnostics
    assert "Didn't migrate 1 pages" in bad.log  # the test's own stdout, not a diagnostic
    assert rep.totals == {"pass": 5, "fail": 1, "xfail": 0, "xpass": 0, "skip": 0, "error": 0}


def test_kselftest_migration_on_the_harness_built_kernel():
    """The same run on linux-source-6.12 built by `harness kernel build --fragment numa --fragment cxl`:
    every case passes, shared hugetlb included."""
    rep = parse_ktap(read("guest-migration-numa3cpu-built.tap"))
    assert [r.status for r in rep.results] == ["pass"] * 6 and not rep.failed
    assert rep.totals["pass"] == 6
