"""The numa-harness pytest plugin: test a kernel on emulated NUMA/CXL machines from your own test repository.

Installed with the package (entry point ``pytest11``), so ``pip install
numa-harness`` is all a test repository needs. Its API is its hooks,
options, fixtures and markers:

Markers
    ``@pytest.mark.topology("cxl-single")``  the machine a test runs on: a preset
        name or a YAML path (relative to the test file's folder). One VM per
        topology per session, booted when its first test runs, shared by the rest.
    ``@pytest.mark.guest_state(numa_balancing=2, thp="always", demotion=True)``
        knobs other than the baseline (:data:`harness.guest.state.BASELINE`:
        NUMA balancing off, THP never, demotion as the topology set it).
    ``@pytest.mark.requires_kconfig("CONFIG_X", ...)``  skip unless the kernel's
        ``.config`` has them (checked before booting).
    ``@pytest.mark.requires_node_mask("has_...")``  skip unless the guest kernel
        exposes ``/sys/devices/system/node/<mask>`` (checked after booting).
    ``@pytest.mark.fresh_vm``  the test gets a machine of its own, restored from a
        snapshot taken once after boot and set-up (a fresh boot for CXL topologies).
    ``@pytest.mark.expect_kernel_problem("oom")``  the test provokes this kind of
        kernel report on purpose (``oom``, ``warning``, ``bug``, ``oops``,
        ``call-trace``); it must appear, and does not fail the test. Any
        other kernel problem during a test fails it.

Fixtures
    ``vm``     the booted :class:`~harness.boot.Machine` of the test's topology,
               in the baseline state, with ``dmesg`` marked at the test's start.
    ``guest``  runs guest programs and returns their parsed results.
    ``stats``  node statistics: snapshots and deltas (one SSH round trip each).

Options
    Each setting is an option ``--nh-NAME``, an ini key ``nh_NAME`` and a variable
    ``NUMA_HARNESS_NAME``, in that order of precedence (:mod:`harness.plugin.options`,
    the one table of them): ``--nh-kernel BZIMAGE|TREE|debian:X.Y``, ``--nh-modules DIR``,
    ``--nh-kernel-tree DIR``, ``--nh-kernel-config FILE``, ``--nh-qemu BIN``,
    ``--nh-accel auto|kvm|tcg``, ``--nh-keep-vm-on-failure``, ``--nh-fresh-vm`` (every test as ``fresh_vm``), ``--nh-topology NAME`` (run only
    that topology's tests; ``-k NAME`` selects by topology name too), ``--nh-topology-path DIR``
    (where a topology name is looked up before the presets), ``--nh-artifacts DIR`` (failure
    bundles), ``--nh-html-report PATH`` (one HTML page for the run, with plots),
    ``--nh-fail-on-kernel-problems`` (an otherwise green run fails on kernel problems), and the
    selftest ones. The
    unprefixed names of earlier versions are aliases where nothing else owns them.

Nothing that boots machines is imported until a test needs one.

On failure the report carries the console tail, the guest's dmesg since the
test began and, if the test used ``stats``, the statistics delta (in the
failure text, so JUnit carries them too), and a bundle of everything needed to
reproduce it is written (:mod:`harness.plugin.bundle`). Every test case has the
JUnit properties topology, kernel_release, accel, qemu_version, boot_seconds.
``stats.timeline(interval)`` samples memory per node while a block runs; the
HTML report plots it. With ``--keep-vm-on-failure`` each kept VM has a name of its
own (``pytest-TOPOLOGY-PID``) and is listed at the end of the run, also under
pytest-xdist (the controller prints its workers' notes). SIGTERM or SIGHUP stops
the session as Ctrl-C does, VMs shut down, exit status 128+N
(:mod:`harness.plugin.signals`). A guest that panics fails its test; the next
test of that topology gets a fresh VM.
"""

from harness.plugin.fixtures import guest, numa_harness_pool, stats, vm
from harness.plugin.hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_load_initial_conftests,
    pytest_report_header,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_testnodedown,
    pytest_unconfigure,
)

#: Kernel selftests as pytest items (``--nh-ktap-dir DIR``, ``ktap_*.sh`` files).
pytest_plugins = ["harness.plugin.ktap"]

__all__ = [
    "guest", "numa_harness_pool", "pytest_addoption", "pytest_collection_modifyitems", "pytest_configure",
    "pytest_load_initial_conftests", "pytest_report_header", "pytest_runtest_call", "pytest_runtest_makereport",
    "pytest_runtest_setup", "pytest_sessionfinish", "pytest_sessionstart", "pytest_testnodedown", "pytest_unconfigure",
    "stats", "vm",
]
