"""The pytest plugin, used the way a kernel developer uses it: a test folder outside this checkout.

Each test writes a small test module into a fresh folder and runs ``pytest``
on it in a subprocess (the plugin is found through its ``pytest11`` entry
point, not a conftest), then reads the outcome from a JSON report the run
writes with ``--junitxml``-free means: pytest's own ``-rA`` summary and exit
status. One topology (numa-basic) keeps it to one boot per run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]
pytest_plugins = ["pytester"]

CONFTEST_FREE = "# no conftest: the plugin comes from the installed package's entry point\n"


def run_pytest(folder: Path, *args: str, timeout: float = 600,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))} | (extra_env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", *args],
                          cwd=folder, capture_output=True, text=True, timeout=timeout, env=env)


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(CONFTEST_FREE + textwrap.dedent(body))
    return path


def test_one_vm_serves_a_topologys_tests_in_a_known_state(tmp_path):
    """The guest starts every test with balancing and THP off, a test can ask for other knobs,
    and the two tests share one VM (same boot id). Checked against the guest's own /proc and /sys."""
    write(tmp_path, "test_state.py", """
        import pytest

        pytestmark = pytest.mark.topology("numa-basic")
        BOOT_IDS = []

        def test_baseline(vm):
            assert vm.run("cat /proc/sys/kernel/numa_balancing").stdout.strip() == "0"
            assert "[never]" in vm.run("cat /sys/kernel/mm/transparent_hugepage/enabled").stdout
            BOOT_IDS.append(vm.run("cat /proc/sys/kernel/random/boot_id").stdout)

        @pytest.mark.guest_state(numa_balancing=2, thp="always")
        def test_other_knobs(vm):
            assert vm.run("cat /proc/sys/kernel/numa_balancing").stdout.strip() == "2"
            assert "[always]" in vm.run("cat /sys/kernel/mm/transparent_hugepage/enabled").stdout
            BOOT_IDS.append(vm.run("cat /proc/sys/kernel/random/boot_id").stdout)
            assert BOOT_IDS[0] == BOOT_IDS[1]

        def test_baseline_again_after_a_test_changed_knobs(vm):
            assert vm.run("cat /proc/sys/kernel/numa_balancing").stdout.strip() == "0"

        @pytest.mark.requires_kconfig("CONFIG_NUMA", "CONFIG_NO_SUCH_OPTION_XYZ")
        def test_skipped_for_a_missing_option(vm):
            raise AssertionError("must not run")

        @pytest.mark.requires_node_mask("has_no_such_mask")
        def test_skipped_for_a_missing_mask(vm):
            raise AssertionError("must not run")
        """)
    r = run_pytest(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"\b3 passed, 2 skipped\b", out), out
    assert "kernel lacks CONFIG_NO_SUCH_OPTION_XYZ" in out
    assert "no node mask has_no_such_mask" in out
    assert out.count("numa-harness: booted numa-basic") == 1, out


def test_failures_carry_the_console_and_dmesg_and_kernel_problems_fail_tests(tmp_path):
    """A failing test's report has the console tail and the dmesg since it began; a WARN the
    test did not expect fails it; an OOM it expected passes; the -k topology selection works."""
    write(tmp_path, "test_failures.py", """
        import pytest

        pytestmark = pytest.mark.topology("numa-basic")
        OOM_COMMAND = "pressure --target machine --until total:8192 --step 64 --no-guard > /dev/null"

        def test_fails_with_context(vm):
            vm.run("echo numa-harness-probe-line > /dev/kmsg")
            assert False, "deliberate"

        def test_fails_with_a_stats_delta(vm, stats):
            vm.run("numactl --membind=1 memhog 8M > /dev/null")
            assert stats.delta().node(1).numa_hit >= 2048
            assert False, "deliberate"

        @pytest.mark.expect_kernel_problem("oom")
        def test_provokes_an_oom(vm):
            # No swap: filling past the machine's memory in 64 MiB steps, guard off, ends in an OOM kill.
            r = vm.run(OOM_COMMAND, check=False, timeout=300)
            assert r.exit_status == 137

        def test_unexpected_oom_fails(vm):
            vm.run(OOM_COMMAND, check=False, timeout=300)
        """)
    write(tmp_path, "test_other_topology.py", """
        import pytest

        @pytest.mark.topology("cxl-single")
        def test_never_selected(vm):
            raise AssertionError("deselected by -k")
        """)
    r = run_pytest(tmp_path, "-k", "numa-basic")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"\b3 failed, 1 passed, 1 deselected\b", out), out
    assert "numa-harness: statistics delta since the test began" in out
    assert "numa-harness: console tail" in out
    assert "numa-harness: guest dmesg since the test began" in out
    section = out.split("numa-harness: guest dmesg since the test began", 1)[1]
    assert "numa-harness-probe-line" in section.split("numa-harness: console tail")[0] or "numa-harness-probe-line" in section
    assert "guest kernel OOM kill during the test: pressure" in out, out


def test_a_panic_fails_its_test_and_the_next_test_gets_a_fresh_vm(tmp_path):
    write(tmp_path, "test_panic.py", """
        import pytest

        pytestmark = pytest.mark.topology("numa-basic")

        def test_panics(vm):
            vm.run("echo c > /proc/sysrq-trigger", timeout=60)

        def test_next_one_runs(vm):
            assert vm.run("echo alive").stdout.strip() == "alive"
        """)
    r = run_pytest(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"\b1 failed, 1 passed\b", out), out
    assert "panic" in out.lower()
    assert out.count("numa-harness: booted numa-basic") == 2, out


def test_keep_vm_on_failure_leaves_the_failed_tests_vm_for_harness_ssh(tmp_path):
    """With --keep-vm-on-failure the VM that served a failing test outlives pytest as a
    background VM: `harness ssh` reaches the same guest (same boot id), `harness down` stops it."""
    write(tmp_path, "test_keep.py", """
        import pytest

        @pytest.mark.topology("numa-basic")
        def test_fails(vm):
            boot_id = vm.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
            open("boot_id", "w").write(boot_id)
            assert False, "deliberate"
        """)
    state = tmp_path / "state"
    env = {**os.environ, "NUMA_HARNESS_STATE": str(state)}
    name = None
    try:
        r = run_pytest(tmp_path, "--keep-vm-on-failure", extra_env={"NUMA_HARNESS_STATE": str(state)})
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        m = re.search(r"harness ssh (pytest-numa-basic-\d+)\b", out)
        assert m, out
        name = m.group(1)
        harness = [sys.executable, "-m", "harness.cli"]
        ssh = subprocess.run([*harness, "ssh", name, "--", "cat /proc/sys/kernel/random/boot_id"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.strip() == (tmp_path / "boot_id").read_text()
    finally:
        names = [name] if name else [d.name for d in state.glob("pytest-numa-basic-*")]
        downs = [subprocess.run([sys.executable, "-m", "harness.cli", "down", n],
                                capture_output=True, text=True, timeout=120, env=env) for n in names]
    assert names and all(d.returncode == 0 for d in downs), [d.stderr for d in downs]
    assert list(state.iterdir()) == []


def test_a_repository_configured_only_in_pyproject_boots_its_kernel_and_topology(pytester, monkeypatch):
    """A test repository whose pyproject.toml names a kernel (Debian's 7.2, not the default) by paths
    relative to itself and a folder of its own topologies; pytest is run from a sub-folder with no
    option and no NUMA_HARNESS_* variable. The guest's `uname -r` is the configured kernel's, its
    node count the repository topology's, and --log-cli-level=DEBUG shows the guest commands, the QMP
    traffic and the cache decisions. One boot."""
    from harness.boot.prepare import KernelSpec, resolve_kernel
    from harness.plugin import options

    k = resolve_kernel(KernelSpec.of("debian:7.2"), progress=print)  # cached after the first run
    assert k.modules_root is not None and k.config is not None
    for s in options.ALL:
        monkeypatch.delenv(s.env, raising=False)
    kdir = pytester.mkdir("kernel")
    (kdir / "bzImage").symlink_to(k.image)
    (kdir / "modules").symlink_to(k.modules_root)
    (kdir / "config").symlink_to(k.config)
    topologies = pytester.mkdir("topologies")
    (topologies / "three-nodes.yaml").write_text(textwrap.dedent("""\
        description: this repository's own machine, two CPU nodes and a memory-only one
        machine: {smp: 2}
        nodes:
          - {id: 0, cpus: 0, memory: 512M}
          - {id: 1, cpus: 1, memory: 512M}
          - {id: 2, memory: 512M}
        """))
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        nh_kernel = "kernel/bzImage"
        nh_modules = "kernel/modules"
        nh_kernel_config = "kernel/config"
        nh_topology_path = ["topologies"]
        nh_accel = "tcg"
        """)
    tests = pytester.mkdir("tests")
    (tests / "test_kernel.py").write_text(CONFTEST_FREE + textwrap.dedent(f"""
        import pytest

        @pytest.mark.topology("three-nodes")
        def test_the_configured_kernel_and_topology(vm):
            assert vm.run("uname -r").stdout.strip() == {k.release!r}
            assert vm.run("cat /sys/devices/system/node/online").stdout.strip() == "0-2"
        """))
    monkeypatch.chdir(tests)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--log-cli-level=DEBUG", timeout=800)
    out = r.stdout.str() + r.stderr.str()
    assert r.ret == 0, out[-6000:]
    r.assert_outcomes(passed=1)
    assert f"numa-harness: kernel {kdir / 'bzImage'} (from pyproject.toml: nh_kernel)" in out, out[:3000]
    assert k.release != resolve_kernel(KernelSpec()).release  # really not the default kernel
    assert "guest$ uname -r" in out and "guest: exit 0 in" in out  # guest commands
    assert "QMP -> " in out and "QMP <- " in out                   # QMP traffic
    assert re.search(r"guest image for kernel \S+: cached|building guest image", out)  # cache decisions
    assert "capabilities" in out
    assert out.count("numa-harness: booted three-nodes") == 1
