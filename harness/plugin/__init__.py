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
    ``--kernel BZIMAGE|TREE|debian:X.Y``, ``--modules DIR``, ``--kernel-tree DIR``,
    ``--kernel-config FILE``, ``--qemu BIN``, ``--accel auto|kvm|tcg``,
    ``--keep-vm-on-failure``, ``--fresh-vm`` (every test as ``fresh_vm``), ``--topology NAME`` (run only that topology's
    tests; ``-k NAME`` selects by topology name too).

On failure the report carries the console tail, the guest's dmesg since the
test began and, if the test used ``stats``, the statistics delta. A guest
that panics fails its test; the next test of that topology gets a fresh VM.
"""

from harness.plugin.fixtures import guest, numa_harness_pool, stats, vm
from harness.plugin.hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
)

#: Kernel selftests as pytest items (``--ktap-dir DIR``, ``ktap_*.sh`` files).
pytest_plugins = ["harness.plugin.ktap"]

__all__ = [
    "guest", "numa_harness_pool", "pytest_addoption", "pytest_collection_modifyitems", "pytest_configure",
    "pytest_runtest_call", "pytest_runtest_makereport", "pytest_runtest_setup", "pytest_sessionfinish",
    "stats", "vm",
]
