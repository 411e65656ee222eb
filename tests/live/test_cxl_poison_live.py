"""CXL poison on a live guest (cxl-single: one volatile device in a region onlined as a node).

Poison goes on twice, at DPAs inside the region: through QEMU's ``cxl-inject-poison`` (128
bytes) and through the guest kernel's debugfs ``inject_poison`` (64 bytes). The guest kernel's
poison list (``trigger_poison_list``, the ``cxl_poison`` trace events) then shows both, at
their DPAs, mapped into the region at HPA = region start + DPA (a 1-way region); after
``clear_poison`` on both, neither is listed. The guest's HardwareCorrupted count is printed
before and after: the kernel takes a page offline only on a machine check, which QEMU's
device does not raise.
"""

from __future__ import annotations

import pytest

from harness.boot import boot

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

QMP_DPA, QMP_LEN = 0x40000, 128
DEBUGFS_DPA = 0x80000


def test_poison_injected_listed_and_cleared():
    with boot("cxl-single", accel="tcg", baseline=False) as vm:
        dev = vm.topology.cxl.devices[0].id
        region = vm.setup.regions[0]
        start = int(vm.run(f"cat /sys/bus/cxl/devices/{region.name}/resource", timeout=60).stdout, 0)
        release = vm.run("uname -r", timeout=60).stdout.strip()
        before = vm.cxl.poison_list(dev)
        hc0 = vm.cxl.hardware_corrupted_kb()
        vm.cxl.inject_poison(dev, QMP_DPA, QMP_LEN, via="qmp")
        vm.cxl.inject_poison(dev, DEBUGFS_DPA, via="debugfs")
        listed = vm.cxl.poison_list(dev)
        hc1 = vm.cxl.hardware_corrupted_kb()
        vm.cxl.clear_poison(dev, QMP_DPA, QMP_LEN)
        vm.cxl.clear_poison(dev, DEBUGFS_DPA)
        after = vm.cxl.poison_list(dev)
        vm.check_health()
    print(f"{release}: listed {[(hex(r.dpa), r.length, r.source, r.region) for r in listed]}; "
          f"HardwareCorrupted {hc0} kB before, {hc1} kB with poison listed")
    ours = {QMP_DPA, DEBUGFS_DPA}
    assert not {r.dpa for r in before} & ours, before
    by_dpa = {r.dpa: r for r in listed}
    assert ours <= set(by_dpa), f"poison list: {listed}"
    assert by_dpa[QMP_DPA].length == QMP_LEN and by_dpa[DEBUGFS_DPA].length == 64
    assert by_dpa[DEBUGFS_DPA].source == "Injected", "the kernel's own Inject Poison"
    for dpa in ours:
        assert by_dpa[dpa].region == region.name and by_dpa[dpa].hpa == start + dpa, by_dpa[dpa]
    assert not {r.dpa for r in after} & ours and all(not (QMP_DPA <= r.dpa < QMP_DPA + QMP_LEN) for r in after), after
