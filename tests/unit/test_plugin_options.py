"""The plugin as a guest in someone else's test repository: its options, ini keys and environment
variables, the old names only where free, nothing heavy imported at pytest start, a cheap report
header, and a harness error shown once.

Runs pytest on small test folders with ``pytester``; the plugin comes from the installed
package's ``pytest11`` entry point, as in a user's repository (no conftest loads it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import TopologyError
from harness.plugin import options
from harness.plugin.pool import find_topology

pytest_plugins = ["pytester"]

HEAVY = ("paramiko", "cryptography", "qemu.qmp", "rich", "harness.vm", "harness.boot")

#: a test that prints what the plugin resolved, one ``NAME=VALUE`` line per setting
SHOW = """
def test_show(request):
    o = request.config.option
    print()
    for name in ("nh_kernel", "nh_modules", "nh_qemu", "nh_accel", "nh_keep", "nh_topology",
                 "nh_topology_path", "nh_ktap_timeout", "nh_kunit_suites"):
        print(f"{name}={getattr(o, name)!r}")
"""


def shown(result: pytest.RunResult) -> dict[str, str]:
    out = {}
    for line in result.outlines:
        if "=" in line and line.split("=", 1)[0].startswith("nh_"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for s in options.ALL:
        monkeypatch.delenv(s.env, raising=False)
    return monkeypatch


def test_a_conftest_that_owns_kernel_keeps_it_and_the_plugin_still_works(pytester: pytest.Pytester, clean_env):
    """The crash this guards against: argparse's "conflicting option string: --kernel"."""
    pytester.makeconftest("""
        def pytest_addoption(parser):
            parser.addoption("--kernel", default="theirs", help="this repository's own kernel option")
            parser.addoption("--accel", action="store_true", help="and its own --accel")
    """)
    pytester.makepyfile(test_theirs="""
        def test_theirs(request):
            print("THEIRS", request.config.getoption("--kernel"), request.config.getoption("--accel"))
            print("OURS", request.config.option.nh_kernel, request.config.option.nh_accel)
    """)
    r = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--kernel", "mine", "--accel",
                                      "--nh-kernel", "debian:7.2", "--nh-accel", "tcg")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*THEIRS mine True*", "*OURS debian:7.2 tcg*"])
    assert "conflicting option" not in r.stdout.str() + r.stderr.str()
    # the names left free are still aliases
    r = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--modules", "/m", "--topology", "numa-basic")
    r.assert_outcomes(passed=1)


def test_free_old_names_are_aliases_of_the_prefixed_options(pytester: pytest.Pytester, clean_env):
    pytester.makepyfile(test_show=SHOW)
    r = pytester.runpytest("-s", "--kernel", "/k/bzImage", "--accel", "kvm", "--keep-vm-on-failure",
                           "--topology", "a", "--nh-topology", "b", "--ktap-timeout", "12", "--kunit", "--kunit-suite", "damon*")
    r.assert_outcomes(passed=1)
    got = shown(r)
    assert got["nh_kernel"] == "'/k/bzImage'" and got["nh_accel"] == "'kvm'" and got["nh_keep"] == "True"
    assert got["nh_topology"] == "['a', 'b']" and got["nh_ktap_timeout"] == "12.0"
    assert got["nh_kunit_suites"] == "['damon*']"


def test_every_option_is_prefixed_and_has_an_ini_key_and_a_variable():
    for s in options.ALL:
        assert s.option.startswith("--nh-") and s.ini.startswith("nh_") and s.env.startswith("NUMA_HARNESS_")
    assert options.setting("kernel").env == "NUMA_HARNESS_KERNEL"  # the variable users already set
    assert options.setting("qemu").env == "NUMA_HARNESS_QEMU"


def test_precedence_is_command_line_then_ini_then_environment_then_default(pytester: pytest.Pytester, clean_env):
    pytester.makepyfile(test_show=SHOW)
    r = pytester.runpytest("-s")
    got = shown(r)
    assert got["nh_kernel"] == "None" and got["nh_keep"] == "False" and got["nh_ktap_timeout"] == "300.0"
    assert got["nh_topology_path"] == "[]"

    clean_env.setenv("NUMA_HARNESS_KERNEL", "debian:7.2")
    clean_env.setenv("NUMA_HARNESS_ACCEL", "kvm")
    clean_env.setenv("NUMA_HARNESS_KEEP_VM_ON_FAILURE", "yes")
    clean_env.setenv("NUMA_HARNESS_TOPOLOGY", "a, b")
    clean_env.setenv("NUMA_HARNESS_TOPOLOGY_PATH", "/t1:/t2")
    got = shown(pytester.runpytest("-s"))
    assert got["nh_kernel"] == "'debian:7.2'" and got["nh_accel"] == "'kvm'" and got["nh_keep"] == "True"
    assert got["nh_topology"] == "['a', 'b']" and got["nh_topology_path"] == "['/t1', '/t2']"

    pytester.makeini("""
        [pytest]
        nh_kernel = kernels/bzImage
        nh_accel = tcg
        nh_keep_vm_on_failure = false
        nh_topology_path = topologies /abs/elsewhere
    """)
    got = shown(pytester.runpytest("-s"))
    assert got["nh_kernel"] == repr(str(pytester.path / "kernels" / "bzImage"))
    assert got["nh_accel"] == "'tcg'" and got["nh_keep"] == "False"
    assert got["nh_topology_path"] == repr([str(pytester.path / "topologies"), "/abs/elsewhere"])
    assert got["nh_topology"] == "['a', 'b']"  # not in the ini file: the environment's

    got = shown(pytester.runpytest("-s", "--nh-kernel", "other/bzImage", "--nh-accel", "auto"))
    assert got["nh_kernel"] == "'other/bzImage'" and got["nh_accel"] == "'auto'"


def test_ini_paths_are_relative_to_the_ini_file_not_the_working_directory(pytester: pytest.Pytester, clean_env,
                                                                          monkeypatch: pytest.MonkeyPatch):
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        nh_kernel = "../linux/arch/x86/boot/bzImage"
        nh_qemu = "qemu-system-x86_64"
        nh_topology_path = ["topologies"]
        nh_ktap_timeout = "60"
    """)
    sub = pytester.mkdir("tests")
    (sub / "test_show.py").write_text(SHOW)
    monkeypatch.chdir(sub)
    got = shown(pytester.runpytest("-s", "-c", str(pytester.path / "pyproject.toml")))
    assert got["nh_kernel"] == repr(str(pytester.path / ".." / "linux" / "arch" / "x86" / "boot" / "bzImage"))
    assert got["nh_qemu"] == "'qemu-system-x86_64'"  # a name on PATH stays a name
    assert got["nh_topology_path"] == repr([str(pytester.path / "topologies")])
    assert got["nh_ktap_timeout"] == "60.0"


def test_a_bad_value_is_a_usage_error_naming_where_it_came_from(pytester: pytest.Pytester, clean_env):
    pytester.makepyfile(test_show=SHOW)
    clean_env.setenv("NUMA_HARNESS_ACCEL", "fast")
    r = pytester.runpytest_subprocess()
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "$NUMA_HARNESS_ACCEL: expected one of auto, kvm, tcg, got 'fast'" in r.stderr.str()
    assert "Traceback" not in r.stderr.str()
    clean_env.delenv("NUMA_HARNESS_ACCEL")
    pytester.makeini("[pytest]\nnh_ktap_timeout = soon\n")
    r = pytester.runpytest_subprocess()
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "tox.ini: nh_ktap_timeout: expected a number" in r.stderr.str()


def test_importing_the_plugin_leaves_the_heavy_modules_alone():
    code = ("import sys, harness.plugin; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"imported at pytest start: {r.stdout}"


def test_a_pytest_run_that_needs_no_vm_imports_nothing_heavy(pytester: pytest.Pytester, clean_env):
    """A whole session (header, collection with topology markers, a test) in a repository that has the wheel."""
    pytester.makeconftest(f"""
        import sys

        def pytest_sessionfinish(session):
            print("HEAVY:", [m for m in {HEAVY!r} if m in sys.modules])
    """)
    pytester.makepyfile(test_plain="""
        import pytest

        def test_plain():
            assert True

        @pytest.mark.topology("numa-basic")
        def test_marked_but_deselected(vm):
            pass
    """)
    r = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "-k", "not marked")
    r.assert_outcomes(passed=1, deselected=1)
    r.stdout.fnmatch_lines(["*HEAVY: []*"])


def test_the_report_header_says_what_would_boot_without_fetching(pytester: pytest.Pytester, clean_env,
                                                                 tmp_path: Path):
    cache = tmp_path / "cache"
    clean_env.setenv("NUMA_HARNESS_CACHE", str(cache))
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--nh-accel", "tcg")
    r.stdout.fnmatch_lines([
        "numa-harness: kernel default (Debian's packaged kernel, fetched on first use); QEMU *; "
        "accelerator tcg (from command line)",
        f"numa-harness: cache {cache}",
    ])
    assert not (cache / "kernels").exists()  # nothing fetched, not even looked up


def test_a_harness_error_is_shown_once_without_a_chained_traceback(pytester: pytest.Pytester, clean_env):
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.topology("no-such-topology-anywhere")
        def test_needs_a_vm(vm):
            pass
    """)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    errors = out.split("= ERRORS =", 1)[1].split("short test summary info", 1)[0]
    assert errors.count("no-such-topology-anywhere") == 1, out
    assert "During handling of the above exception" not in out
    assert "Traceback" not in out


def test_a_topology_name_is_found_in_the_search_path_before_the_presets(tmp_path: Path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    (theirs / "my-topo.yml").write_text("description: x\n")
    (mine / "numa-basic.yaml").write_text("description: a repository's own numa-basic\n")
    assert find_topology("my-topo", None, (mine, theirs)) == (theirs / "my-topo.yml").resolve()
    assert find_topology("numa-basic", None, (mine, theirs)) == (mine / "numa-basic.yaml").resolve()
    preset = find_topology("numa-basic")
    assert preset.name == "numa-basic.yaml" and preset.parent != mine
    assert find_topology("cxl-single", None, (mine,)).name == "cxl-single.yaml"  # not there: the preset
    with pytest.raises(TopologyError, match=r"my-topo: is neither my-topo.yaml in the topology path \(.*mine\) nor"):
        find_topology("my-topo", None, (mine,))
    # a path is a path: relative to the test's folder, never looked up by name
    (tmp_path / "near.yaml").write_text("description: y\n")
    assert find_topology("near.yaml", tmp_path, (mine,)) == (tmp_path / "near.yaml").resolve()


def test_the_readme_documents_every_option_and_its_ini_example_uses_real_keys():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for s in options.ALL:
        assert f"`{s.option}" in readme, f"{s.option} is not in the README"
        assert f"`{s.ini}`" in readme, f"{s.ini} is not in the README"
        assert f"`{s.env}`" in readme, f"{s.env} is not in the README"
    tomllib = pytest.importorskip("tomllib")
    block = readme.split("```toml\n[tool.pytest.ini_options]", 1)[1].split("```", 1)[0]
    example = tomllib.loads("[tool.pytest.ini_options]" + block)["tool"]["pytest"]["ini_options"]
    keys = {s.ini for s in options.ALL}
    assert [k for k in example if k.startswith("nh_")] and not [k for k in example if k.startswith("nh_") and
                                                                 k not in keys]


def test_under_pytest_8_a_ktap_result_is_a_junit_property_and_no_subtest(monkeypatch: pytest.MonkeyPatch):
    """The wheel needs pytest >= 8; subtests came in 9. Without them each result still lands in the
    item's properties, and nothing is reported that pytest 8 could not take."""
    from harness.plugin import ktap

    class Item:
        nodeid, location, keywords, user_properties = "t.sh", ("t.sh", 0, "t"), {}, []

        class ihook:  # noqa: N801 (pytest's name)
            @staticmethod
            def pytest_runtest_logreport(report):
                raise AssertionError("a subtest report under pytest 8")

    monkeypatch.delattr(pytest, "SubtestReport", raising=False)
    ktap._log_result(Item(), "case/sub", "skipped", ("t.sh", 0, "Skipped: no nodes"))  # type: ignore[arg-type]
    assert Item.user_properties == [("ktap case/sub", "skipped: no nodes")]


def test_progress_lines_reach_the_terminal_while_a_fixture_runs(pytester: pytest.Pytester, clean_env):
    """What a first run says while it fetches and builds is not kept in a passing test's captured output."""
    pytester.makepyfile(test_progress="""
        import pytest
        from harness.plugin.hooks import pool

        @pytest.fixture
        def fetching(pytestconfig):
            pool(pytestconfig)._say("fetching the kernel (about 110 MB, once)")

        def test_uses_it(fetching):
            pass
    """)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # capture on, a passing test: nothing shown of it
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*numa-harness: fetching the kernel (about 110 MB, once)"])
