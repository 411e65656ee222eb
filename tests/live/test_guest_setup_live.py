"""Guest set-up on a real guest: CXL regions created, committed and onlined as the topology says.

One boot per preset (TCG: CXL memory onlined as RAM is only reliable under
TCG). After :func:`harness.boot.boot` ran :func:`apply_guest_setup`, what the guest kernel reports is
read back independently of the script: region ``commit``/``size`` in the
CXL sysfs, the new node's MemTotal, ``has_memory``, memory tiers, the dax
device's driver, and each region position's memdev sitting under the host
bridge the topology puts that device on.
"""

from __future__ import annotations

import pytest

from harness.boot import Machine, boot
from harness.guest.setup import GuestSetupError, SetupResult, apply_guest_setup, region_size
from harness.stats import snapshot
from harness.topology.model import Topology

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

PRESETS = ["cxl-single", "cxl-interleave", "cxl-switch", "cxl-pmem"]


def booted(preset: str) -> Machine:
    """The machine the CLI would boot for ``preset`` (its guest set up), under TCG."""
    return boot(preset, accel="tcg", baseline=False)


def guest_state(vm: Machine, res: SetupResult) -> dict[str, dict[str, str]]:
    """Per region and per memdev: key=value facts read straight from sysfs."""
    cmd = []
    for r in res.regions:
        cmd.append(f"R=/sys/bus/cxl/devices/{r.name}; echo {r.name} commit=$(cat $R/commit) size=$(cat $R/size) "
                   f"mode=$(cat $R/mode)")
        if r.dax:
            cmd.append(f"D=/sys/bus/dax/devices/{r.dax}; echo {r.dax} driver=$(basename $(readlink -f $D/driver)) "
                       f"size=$(cat $D/size) target_node=$(cat $D/target_node) chardev=$([ -c /dev/{r.dax} ] && echo yes || echo no)")
        for m in r.memdevs:
            cmd.append(f"echo {m} path=$(readlink -f /sys/bus/cxl/devices/{m}) serial=$(cat /sys/bus/cxl/devices/{m}/serial)")
    out = vm.run("\n".join(cmd), timeout=60, check=True).stdout
    return {w[0]: dict(x.split("=", 1) for x in w[1:]) for w in (ln.split() for ln in out.splitlines()) if w}


def host_bridge_bus(t: Topology, device: str) -> int:
    """bus_nr of the host bridge above ``device`` (through any switches)."""
    assert t.cxl
    port = next(d.port for d in t.cxl.devices if d.id == device)
    while True:
        for hb in t.cxl.host_bridges:
            if any(rp.id == port for rp in hb.root_ports):
                return hb.bus_nr
        port = next(sw.upstream for sw in t.cxl.switches if any(dp.id == port for dp in sw.downstream_ports))


@pytest.mark.parametrize("preset", PRESETS)
def test_regions_created_and_onlined(preset):
    with booted(preset) as vm:
        t, res = vm.topology, vm.setup
        g = snapshot(vm, boot_log=False)
        state = guest_state(vm, res)
        if preset == "cxl-single":
            # Running it again: the memdev's capacity is taken, so reserving DPA on its
            # next free decoder fails; the error names the step, the file and the errno.
            with pytest.raises(GuestSetupError) as again:
                apply_guest_setup(vm, t)
        vm.check_health()

    srat_nodes = {n.id for n in t.nodes if n.memory}
    assert len(res.regions) == len(t.guest.regions)
    for want, got in zip(t.guest.regions, res.regions):
        size = region_size(t, want)
        reg = state[got.name]
        assert reg["commit"] == "1", f"{got.name} not committed"
        assert int(reg["size"], 16) == size == got.size
        assert reg["mode"] == want.mode and got.mode == want.mode and got.online == want.online
        # Position j's memdev is under the host bridge of topology device j.
        assert len(got.memdevs) == len(want.devices)
        for dev, md in zip(want.devices, got.memdevs):
            assert res.memdevs[dev] == md
            path = state[md]["path"]
            assert path.startswith(f"/sys/devices/pci0000:{host_bridge_bus(t, dev):02x}/"), (dev, md, path)
            serial = next(d.serial for d in t.cxl.devices if d.id == dev)
            if serial is not None:
                assert int(state[md]["serial"], 16) == serial
        dax = state[got.dax]
        assert int(dax["target_node"]) == got.node
        if want.online == "devdax":
            assert dax["driver"] == "device_dax" and dax["chardev"] == "yes"
            assert got.node not in g.with_memory or got.node in srat_nodes, "devdax memory must not be onlined"
            assert size * 0.9 <= int(dax["size"]) <= size
        else:
            assert dax["driver"] == "kmem"
            assert got.node not in srat_nodes, f"{got.name} went to SRAT node {got.node}, expected a new node"
            assert got.node in g.with_memory
            mem = g.nodes[got.node].mem_total
            assert size * 0.9 <= mem <= size, f"node {got.node} MemTotal {mem} for a {size}-byte region"

    exp = t.expect
    assert exp is not None
    if exp.nodes is not None:
        assert len(g.with_memory) == exp.nodes, f"has_memory {tuple(g.with_memory)}, expect.nodes {exp.nodes}"
    for nid, ne in exp.node.items():
        if ne.memory is not None:
            got_mem = g.nodes[nid].mem_total
            assert ne.memory * (1 - exp.memory_tolerance / 100) <= got_mem <= ne.memory, f"node {nid}: {got_mem}"
        if ne.cpus is not None:
            assert tuple(g.nodes[nid].cpus) == tuple(ne.cpus)
    if exp.tiers is not None:
        assert [tuple(x) for x in g.tier_groups()] == [tuple(x) for x in exp.tiers]

    if preset == "cxl-single":
        cxl_node = res.regions[0].node
        tier_of = {n: tid for tid, nodes in g.tiers.items() for n in nodes}
        assert tier_of[cxl_node] != tier_of[0], f"tiers {g.tiers}: CXL node {cxl_node} shares node 0's tier"
        assert tier_of[cxl_node] > tier_of[0], "the CXL node should be the slower (higher-numbered) tier"
        e = again.value
        assert e.step == "reserve DPA on mem0", str(e)
        assert e.file.startswith("/sys/bus/cxl/devices/decoder") and e.file.endswith("/dpa_size")
        assert "No space left on device" in str(e)   # ENOSPC from the kernel
        assert "error step=" in (e.detail or "")


# Not a preset: a root port at device 01.0, a switch below a switch, the
# device on the inner switch's third port, two regions on one window (one
# movable system RAM, one devdax), demotion. Serials let the guest confirm
# which device each memdev is.
CASCADE = """
description: cascaded switches, two regions on one window
nodes:
  - {id: 0, cpus: 0-1, memory: 1G}
cxl:
  host_bridges:
    - {id: hb0, bus_nr: 12, root_ports: [{id: rpa}, {id: rpb}]}
  switches:
    - {id: us0, upstream: rpb, downstream_ports: [{id: d0}, {id: d1}]}
    - {id: us1, upstream: d1, downstream_ports: [{id: e0}, {id: e1}, {id: e2}]}
  devices:
    - {id: a, port: rpa, volatile: 256M, serial: 7}
    - {id: z, port: e0, volatile: 256M, serial: 8}
    - {id: b, port: e2, volatile: 256M, serial: 9}
  windows:
    - {targets: [hb0], size: 4G}
guest:
  regions:
    - {window: 0, devices: [b], online: system-ram-movable}
    - {window: 0, devices: [a], online: devdax}
  demotion: true
"""


def test_cascaded_switches_movable_and_devdax(tmp_path):
    path = tmp_path / "cascade.yaml"
    path.write_text(CASCADE)
    with booted(str(path)) as vm:
        res = vm.setup
        g = snapshot(vm, boot_log=False)
        state = guest_state(vm, res)
        extra = vm.run("cat /sys/kernel/mm/numa/demotion_enabled /sys/devices/system/memory/auto_online_blocks; "
                       f"for b in /sys/devices/system/node/node{res.regions[0].node}/memory[0-9]*; do "
                       "echo zone $(cat $b/valid_zones); done", timeout=60, check=True).stdout.split("\n")
        vm.check_health()

    movable, devdax = res.regions
    assert res.demotion is True and extra[0] == "true"
    assert extra[1] == "online", "auto_online_blocks is restored after set-up"
    # b: root port 01.0, us0 00.0, d1 01.0, us1 00.0, e2 02.0, device 00.0.
    b_path = state[movable.memdevs[0]]["path"]
    assert "/0000:0c:01.0/" in b_path and b_path.count("/0000:") == 6, b_path
    assert int(state[movable.memdevs[0]]["serial"], 16) == 9
    assert int(state[devdax.memdevs[0]]["serial"], 16) == 7
    assert state[movable.name]["commit"] == state[devdax.name]["commit"] == "1"
    # Movable: every block of the node is in ZONE_MOVABLE, MemTotal ~ 256M.
    zones = [ln.split()[1] for ln in extra if ln.startswith("zone ")]
    assert zones and set(zones) == {"Movable"}, zones
    assert 0.9 * (256 << 20) <= g.nodes[movable.node].mem_total <= 256 << 20
    # Devdax: bound to device_dax, a char device, its memory not onlined anywhere.
    assert state[devdax.dax]["driver"] == "device_dax" and state[devdax.dax]["chardev"] == "yes"
    assert len(g.with_memory) == 2   # node 0 and the movable region's node
