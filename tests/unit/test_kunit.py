"""harness.selftest.kunit: the KUnit run's planning and parsing, on output recorded from a real guest.

tests/unit/data/kunit/ holds what a real numa-basic guest printed
(linux-source-6.12 built with the numa, cxl and kunit fragments):
``kunit-sh-numa-basic.out`` is files/kunit.sh's output after loading
kunit_example_test, slub_kunit and tests/data/kunit/nh_kunit_nodes.ko (whose
nh_sixty_four_nodes case fails on purpose); ``debugfs/`` a copy of the guest's
/sys/kernel/debug/kunit/*/results; ``modules.dep``/``modules.builtin`` that
kernel's.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.errors import KernelError
from harness.kernel.model import Kernel
from harness.resources import selftest_files_dir
from harness.selftest import kunit
from harness.selftest.run import case_results

DATA = Path(__file__).parent / "data" / "kunit"
KUNIT_SH = selftest_files_dir() / "kunit.sh"
RECORDED = (DATA / "kunit-sh-numa-basic.out").read_text()


# --------------------------------------------------------------------------- the kernel's config


def test_config_problem_names_the_missing_option():
    assert kunit.config_problem(None) is None  # unknown: the guest decides
    debian = {"CONFIG_DEBUG_FS": "y", "CONFIG_NUMA": "y"}
    assert kunit.config_problem(debian) == "the kernel has no KUnit (CONFIG_KUNIT is not set)"
    assert "CONFIG_KUNIT_DEBUGFS is not set" in kunit.config_problem({**debian, "CONFIG_KUNIT": "y"})
    assert "CONFIG_DEBUG_FS is not set" in kunit.config_problem({"CONFIG_KUNIT": "m", "CONFIG_KUNIT_DEBUGFS": "y"})
    assert kunit.config_problem({**debian, "CONFIG_KUNIT": "y", "CONFIG_KUNIT_DEBUGFS": "y"}) is None


def test_the_kunit_fragment_asks_for_what_config_problem_checks():
    from harness.kernel.build import parse_fragment
    from harness.resources import kernel_configs_dir

    frag = parse_fragment((kernel_configs_dir() / "kunit.config").read_text())
    assert kunit.config_problem(frag) is None
    assert frag["CONFIG_KUNIT"] == "y"  # DAMON's suites need KUnit built in


def test_check_kernel_raises_before_booting():
    k = Kernel(Path("/boot/vmlinuz"), None, None, "6.12.0", "Debian's kernel")
    with pytest.raises(KernelError) as e:
        kunit.check_kernel(k, {"CONFIG_NUMA": "y"})
    assert "CONFIG_KUNIT is not set" in str(e.value) and "--fragment kunit" in str(e.value)
    kunit.check_kernel(k, None)


# --------------------------------------------------------------------------- modules


def test_plan_modules_closes_over_the_recorded_modules_dep():
    dep, builtin = (DATA / "modules.dep").read_text(), (DATA / "modules.builtin").read_text()
    paths, missing = kunit.plan_modules(dep, builtin, ["kunit-example-test", "slub_kunit", "resource_kunit", "nope"])
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["kunit-example-test.ko", "slub_kunit.ko"]
    assert missing == ["nope"]  # resource_kunit is built in: its suite ran at boot


def test_module_files_reads_the_tree_and_user_ko_files(tmp_path):
    root = tmp_path / "mods"
    mdir = root / "lib" / "modules" / "6.12.117"
    for p in kunit.parse_modules_dep((DATA / "modules.dep").read_text()):
        (mdir / p).parent.mkdir(parents=True, exist_ok=True)
        (mdir / p).write_bytes(b"\x7fELF " + p.encode())
    shutil.copy(DATA / "modules.dep", mdir / "modules.dep")
    shutil.copy(DATA / "modules.builtin", mdir / "modules.builtin")
    mine = tmp_path / "my-test.ko"
    mine.write_bytes(b"\x7fELF mine")
    k = Kernel(tmp_path / "bzImage", None, root, "6.12.117", "tree")
    files = kunit.module_files(k, ["kunit-example-test", str(mine)])
    assert list(files) == ["kunit_example_test.ko", "my_test.ko"]
    assert files["my_test.ko"] == b"\x7fELF mine"
    with pytest.raises(KernelError, match="has no module nope"):
        kunit.module_files(k, ["nope"])
    with pytest.raises(KernelError, match="no module file"):
        kunit.module_files(k, [str(tmp_path / "absent.ko")])
    with pytest.raises(KernelError, match="has no modules"):
        kunit.module_files(Kernel(tmp_path / "bzImage", None, None, "6.12.117", "bare"), ["slub_kunit"])
    assert kunit.module_files(k, []) == {}


def test_has_kunit_suites_looks_for_the_section_names():
    assert kunit.has_kunit_suites(b"\x7fELF\0.text\0.kunit_test_suites\0.data\0")
    assert kunit.has_kunit_suites(b"\0.kunit_init_test_suites\0")
    assert not kunit.has_kunit_suites(b"\x7fELF\0.text\0.data\0kunit_test_suites")


def test_bundle_holds_the_script_and_the_modules():
    data = kunit.bundle({"slub_kunit.ko": b"ko"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"kunit.sh", "slub_kunit.ko"}
        assert members["kunit.sh"].mode == 0o755
        assert tar.extractfile("kunit.sh").read() == KUNIT_SH.read_bytes()


# --------------------------------------------------------------------------- output and verdicts


def test_parse_output_splits_the_recorded_run():
    out = kunit.parse_output(RECORDED)
    assert out.complete and not out.no_debugfs and not out.disabled and not out.insmod_failed
    assert list(out.loaded) == ["kunit_example_test", "slub_kunit", "nh_kunit_nodes"]
    assert {"damon", "damon-operations", "resource", "cpumask", "example", "slub_test", "nh_nodes"} <= set(out.suites)
    assert out.suites["damon"].startswith("KTAP version 1\n1..1\n")
    assert out.suites["damon"] == (DATA / "debugfs" / "damon" / "results").read_text()


def test_recorded_suites_verdicts():
    res = {o.test: o for o in kunit.outcomes(kunit.parse_output(RECORDED))}
    for suite in ("damon", "damon-operations", "resource", "cpumask", "example", "slub_test"):
        assert res[suite].status == "pass", (suite, res[suite].reason)
    nh = res["nh_nodes"]
    assert (nh.status, nh.reason) == ("fail", "1 failed: nh_sixty_four_nodes")
    cases = {path: r for path, r in case_results(nh)}
    assert cases["nh_two_nodes_online"].status == "pass"
    assert cases["nh_memory_only_node"].status == "skip"
    assert cases["nh_memory_only_node"].reason == "no memory-only node in this topology"
    assert cases["nh_node_has_cpus/node0"].status == "pass" and cases["nh_node_has_cpus/node1"].status == "pass"
    bad = cases["nh_sixty_four_nodes"]
    assert bad.status == "fail" and bad.diagnostics[0].startswith("nh_sixty_four_nodes: EXPECTATION FAILED at")
    assert "Expected num_node_state(N_ONLINE) == 64, but" in bad.log  # KUnit's detail lines have no "#"
    ex = {path: r for path, r in case_results(res["example"])}
    assert ex["example_skip_test"].status == "skip" and ex["example_skip_test"].reason == "this test should be skipped"


def test_globs_select_suites_and_one_matching_nothing_fails():
    out = kunit.parse_output(RECORDED)
    res = kunit.outcomes(out, ["damon*", "nomatch*"])
    assert [o.test for o in res] == ["damon-operations", "damon", "nomatch*"]  # in the guest's order
    assert res[-1].status == "fail" and "no KUnit suite matches 'nomatch*'" in res[-1].reason
    assert "cpumask" in res[-1].reason and "--kunit-module" in res[-1].reason
    assert "--kunit-module" not in kunit.outcomes(out, ["x"], modules=["slub_kunit"])[-1].reason
    assert kunit.select_suites(["a", "b"], []) == (["a", "b"], [])


def test_a_cut_off_listing_fails_its_last_suite_and_says_so():
    text = RECORDED[:RECORDED.index("nh_memory_only_node")]   # cut inside nh_nodes
    res = {o.test: o for o in kunit.outcomes(kunit.parse_output(text))}
    assert res["nh_nodes"].status == "fail"
    assert res["(results)"].reason == "the guest's KUnit listing was cut off before its end"
    assert res["damon"].status == "pass"


def test_a_suite_skipped_as_a_whole_is_a_skip_with_its_reason():
    text = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: s\n    1..0\nok 1 s # SKIP no CXL device\n"
    o = kunit.suite_outcome("s", text)
    assert (o.status, o.reason) == ("skip", "no CXL device")


def test_a_suite_that_says_not_ok_without_a_failed_case_fails():
    text = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: s\n    1..0\n# s: failed to initialize (-12)\nnot ok 1 s\n"
    o = kunit.suite_outcome("s", text)
    assert o.status == "fail" and "failed to initialize" in o.reason
    assert kunit.suite_outcome("s", "").reason.startswith("no result line")


def test_insmod_failures_disabled_and_no_debugfs_markers():
    text = ("numa-harness-kunit: insmod-failed nh_x status=1\ninsmod: can't insert 'nh_x.ko': invalid module format\n"
            "numa-harness-kunit: disabled\nnuma-harness-kunit: end\n")
    out = kunit.parse_output(text)
    assert out.insmod_failed == {"nh_x": "status=1\ninsmod: can't insert 'nh_x.ko': invalid module format"}
    res = kunit.outcomes(out)
    assert [o.test for o in res] == ["insmod nh_x", "(no suites)"]
    assert res[0].status == "fail" and "invalid module format" in res[0].output
    assert res[1].reason == "KUnit is disabled (kunit.enable=0)"
    assert kunit.parse_output("numa-harness-kunit: no-debugfs\n").no_debugfs


# --------------------------------------------------------------------------- kunit.sh itself


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (scripts/install-host-deps)")
def test_kunit_sh_is_shellcheck_clean():
    r = subprocess.run(["shellcheck", "-s", "sh", str(KUNIT_SH)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_kunit_sh_under_busybox_prints_what_parse_output_reads(tmp_path):
    """The script on a copy of the guest's debugfs (no modules to load): the same suites come back."""
    shutil.copytree(DATA / "debugfs", tmp_path / "kunit")
    env = {"NH_KUNIT_DEBUGFS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["busybox", "sh", str(KUNIT_SH), str(tmp_path)], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    out = kunit.parse_output(r.stdout)
    assert out.complete
    recorded = kunit.parse_output(RECORDED)
    assert out.suites == {k: v for k, v in recorded.suites.items() if k in out.suites}
    assert set(out.suites) == {p.name for p in (DATA / "debugfs").iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run(["busybox", "sh", str(KUNIT_SH), str(tmp_path)], capture_output=True, text=True,
                       timeout=30, env={**env, "NH_KUNIT_DEBUGFS": str(empty)})
    assert r.returncode == 3 and kunit.parse_output(r.stdout).no_debugfs
