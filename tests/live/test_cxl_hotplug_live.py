"""CXL device hot-plug on a live guest: a type-3 device on a root port declared ``hotplug: true``
is removed at run time and added back, with the guest's view checked at each step.

1. booted: the memdev is on the CXL bus, its region is committed and its node has memory; 4 MiB of
   tmpfs pages are written on that node (``numactl --membind``) and checksummed;
2. ``vm.cxl.remove_device``: the region's memory blocks are offlined (the kernel migrates the pages
   off first), its dax device leaves kmem, the region is deleted, ``device_del`` completes
   (QEMU releases the device) and the memdev leaves the guest's CXL bus; the node is gone from
   ``has_memory`` and the tmpfs file reads back the same, now on node 0;
3. ``vm.cxl.add_device``: ``device_add`` (fresh backends) brings a memdev back;
   ``vm.cxl.recreate_region`` commits the region again and its node has memory again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.boot import boot
from harness.stats import snapshot

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

TOPOLOGY = Path(__file__).parent / "topologies" / "cxl-hotplug.yaml"
FILE = "/dev/shm/numa-harness-hotplug"


def cxl_bus(vm) -> set[str]:
    return set(vm.run("ls /sys/bus/cxl/devices", timeout=60).stdout.split())


def node_shmem_kb(vm, node: int) -> int:
    out = vm.run(f"cat /sys/devices/system/node/node{node}/meminfo", timeout=60).stdout
    return next(int(ln.split()[-2]) for ln in out.splitlines() if " Shmem:" in ln)


def test_device_removed_and_added_back_below_a_hotplug_root_port():
    with boot(TOPOLOGY, accel="tcg", baseline=False) as vm:
        region = vm.setup.regions[0]
        node = region.node
        md = vm.setup.memdevs["mem0"]
        assert node is not None and md in cxl_bus(vm) and region.name in cxl_bus(vm)
        assert node in snapshot(vm, boot_log=False).masks["has_memory"]
        vm.run(f"numactl --membind={node} sh -c 'head -c 4194304 /dev/urandom > {FILE}'", timeout=120)
        sum1 = vm.run(f"md5sum {FILE}", timeout=60).stdout.split()[0]
        shmem_before = node_shmem_kb(vm, node)

        torn = vm.cxl.remove_device("mem0")
        bus = cxl_bus(vm)
        masks = snapshot(vm, boot_log=False).masks
        sum2 = vm.run(f"md5sum {FILE}", timeout=60).stdout.split()[0]
        shmem_node0 = node_shmem_kb(vm, 0)

        md2 = vm.cxl.add_device("mem0")
        back = cxl_bus(vm)
        log = vm.run("dmesg | grep -E 'pciehp: Slot[(]|cxl_pci |cxl_mem ' | tail -n 8", timeout=60, check=False).stdout
        again = vm.cxl.recreate_region(0)
        masks2 = snapshot(vm, boot_log=False).masks
        vm.check_health()
    print(f"node {node}: Shmem {shmem_before} kB before; torn down {torn}; memdev {md} -> {md2}; "
          f"region {again.name} on node {again.node}\n{log}")
    assert shmem_before >= 4096, "the tmpfs pages were on the CXL node"
    assert [t["region"] for t in torn] == [region.name] and int(torn[0]["blocks"]) >= 1
    assert md not in bus and region.name not in bus, "memdev and region gone from the CXL bus"
    assert node not in masks["has_memory"], masks["has_memory"]
    assert sum2 == sum1 and shmem_node0 >= 4096, "the pages were migrated off, intact, before the memory went"
    assert md2 in back, " ".join(sorted(back))
    assert again.node is not None and again.node in masks2["has_memory"] and again.size == region.size
