"""harness.selftest.run: choosing tests, the upload, verdicts; run-one.sh run for real on the host."""

import base64
import hashlib
import io
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.guest.upload import upload_commands
from harness.resources import selftest_files_dir
from harness.selftest.ktap import parse_ktap
from harness.selftest.run import (
    Outcome,
    Suite,
    bundle,
    case_results,
    discover,
    parse_run_output,
    select_tests,
    verdict,
)

REPO = Path(__file__).resolve().parents[2]
KTAP_DIR = REPO / "tests" / "data" / "ktap"
DATA = Path(__file__).parent / "data" / "ktap"
RUN_ONE = selftest_files_dir() / "run-one.sh"


def outcome(text: str, status: int | None, *, timed_out: bool = False, seconds: float = 1.0) -> Outcome:
    return Outcome("s", "t", status, timed_out, seconds, text, parse_ktap(text))


def test_select_tests_takes_executables_but_not_the_runner_files():
    entries = [("b.sh", True), ("a.sh", True), ("ktap_helpers.sh", False), ("settings", True),
               (".hidden", True), ("run_kselftest.sh", True)]
    assert select_tests(entries) == ["a.sh", "b.sh"]


def test_select_tests_prefers_an_installed_kselftest_list():
    assert select_tests([("x", True)], "mm:migration\nmm:run_vmtests.sh\n\n") == ["mm/migration", "mm/run_vmtests.sh"]


def test_discover_the_repository_ktap_directory():
    s = discover(KTAP_DIR)
    assert s.tests == ("ktap_fail.sh", "ktap_nested.sh", "ktap_nodes.sh", "ktap_skip.sh")
    assert discover(KTAP_DIR / "ktap_skip.sh") == Suite(KTAP_DIR, ("ktap_skip.sh",))
    with pytest.raises(HarnessError):
        discover(KTAP_DIR / "nope")


def test_trailer_parsing():
    assert parse_run_output("TAP version 13\nok 1 a\nnuma-harness-selftest: exit=4 seconds=12 timed_out=0\n") == (
        "TAP version 13\nok 1 a\n", 4, 12.0, False)
    assert parse_run_output("numa-harness-selftest: exit=143 seconds=300 timed_out=1") == ("", 143, 300.0, True)
    assert parse_run_output("cut off\n") == ("cut off\n", None, 0.0, False)


def test_verdicts_on_recorded_output():
    nodes = (DATA / "host-ktap_nodes.tap").read_text()
    assert verdict(outcome(nodes, 0)) == ("pass", "")
    skip = (DATA / "host-ktap_skip.tap").read_text()
    assert verdict(outcome(skip, 4)) == ("skip", "no private memory nodes: the kernel has no has_public_memory mask")
    fail = (DATA / "host-ktap_fail.tap").read_text()
    assert verdict(outcome(fail, 1)) == ("fail", "1 failed: 64 nodes")
    migration = (DATA / "kselftest-migration-1node.tap").read_text()
    assert verdict(outcome(migration, 0)) == ("pass", "")  # every case skipped, the program passed


def test_verdicts_on_the_edges():
    assert verdict(outcome("TAP version 13\n1..2\nok 1 a\n", 143, timed_out=True, seconds=300)) == (
        "fail", "timed out after 300 s")
    assert verdict(outcome("1..1\n", 139)) == ("fail", "killed by signal 11")
    assert verdict(outcome("1..2\nok 1 a\n", 0)) == ("fail", "1 of 2 planned tests never reported")
    assert verdict(outcome("no ktap here\n", 3)) == ("fail", "exit status 3")
    assert verdict(outcome("# needs a CXL device\n", 4)) == ("skip", "needs a CXL device")
    assert verdict(outcome("1..1\nok 1 a\nBail out! gone\n", 1)) == ("fail", "Bail out! gone")
    assert verdict(outcome("", None)) == ("fail", "no exit status (the run was cut off)")
    assert verdict(Outcome("s", "t", None, False, 0, "", error="not run: guest panicked")) == (
        "fail", "not run: guest panicked")
    assert verdict(outcome("1..0 # SKIP nothing to do\n", 0)) == ("skip", "nothing to do")


def test_case_results_are_paths():
    o = outcome((DATA / "host-ktap_nested.tap").read_text(), 0)
    assert [p for p, _ in case_results(o)][:2] == ["node0/meminfo", "node0/numastat"]


def test_upload_commands_rebuild_the_bytes_with_a_shell(tmp_path):
    data = bytes(range(256)) * 100
    cmds = upload_commands(data, str(tmp_path / "x.bin"), chunk=1000)
    assert all(len(c) < 1100 for c in cmds) and len(cmds) == 2 + -(-len(base64.b64encode(data)) // 1000)
    out = ""
    for c in cmds:
        out = subprocess.run(["sh", "-c", c], capture_output=True, text=True, check=True).stdout
    assert (tmp_path / "x.bin").read_bytes() == data
    assert out.split()[0] == hashlib.md5(data).hexdigest()


def test_bundle_holds_the_directory_and_the_runner():
    names = tarfile.open(fileobj=io.BytesIO(bundle(discover(KTAP_DIR))), mode="r:gz").getnames()
    assert "run-one.sh" in names and "ktap/ktap_helpers.sh" in names and "ktap/ktap_nodes.sh" in names


def run_one_on_host(limit: int, directory: Path, test: str) -> tuple[str, int | None, float, bool]:
    proc = subprocess.run(["sh", str(RUN_ONE), str(limit), str(directory), test], capture_output=True, text=True,
                          timeout=limit + 30)
    return parse_run_output(proc.stdout)


def test_run_one_reports_exit_status_and_output():
    body, status, _, timed_out = run_one_on_host(30, KTAP_DIR, "ktap_skip.sh")
    assert (status, timed_out) == (4, False) and "1..0 # SKIP" in body
    body, status, _, _ = run_one_on_host(30, KTAP_DIR, "ktap_fail.sh")
    assert status == 1 and "not ok 2 64 nodes" in body


def test_run_one_ends_a_hung_test_and_its_children():
    t0 = time.monotonic()
    body, status, seconds, timed_out = run_one_on_host(2, REPO / "tests" / "data" / "ktap-timeout", "hang.sh")
    assert timed_out and status == 143 and time.monotonic() - t0 < 15
    assert body == "TAP version 13\n1..2\nok 1 started\n"
    leftover = subprocess.run(["pgrep", "-f", "sleep 3600"], capture_output=True, text=True).stdout
    assert leftover == ""
