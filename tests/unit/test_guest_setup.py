"""Guest set-up, host side: the plan from a topology, the command that carries it, memdev keys,
and the parser of the program's result lines (pure; the program itself: test_cxl_setup_program)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.errors import GuestCommandError
from harness.guest.protocol import MAX_COMMAND_BYTES, SYSFS_ENV
from harness.guest.setup import (
    GuestSetupError,
    SetupResult,
    apply_guest_setup,
    memdev_pci_key,
    parse_error,
    parse_setup_output,
    region_size,
    region_ways,
    setup_command,
    setup_plan,
)
from harness.resources import guest_files_dir
from harness.topology import load, parse, preset_names

REGION_PRESETS = [p for p in preset_names() if load(p).topology.guest.regions]


def _steps(plan: str, kind: str) -> list[list[str]]:
    return [ln.split()[1:] for ln in plan.splitlines() if ln.split()[:1] == [kind]]


def test_region_presets_are_the_expected_ones():
    assert {"cxl-single", "cxl-interleave", "cxl-switch", "cxl-pmem"} <= set(REGION_PRESETS)


@pytest.mark.parametrize("preset", REGION_PRESETS)
def test_region_step_carries_the_topology(preset):
    t = load(preset).topology
    plan = setup_plan(t)
    regions = _steps(plan, "region")
    assert len(regions) == len(t.guest.regions)
    for step, r in zip(regions, t.guest.regions):
        window, mode, ways, gran, size, dpa, online, *ids = step
        assert (int(window), mode, online) == (r.window, r.mode, r.online)
        assert int(ways) == region_ways(r) == len(r.devices)
        assert int(gran) == int(r.granularity)
        assert int(size) == region_size(t, r)
        assert int(dpa) * int(ways) == int(size), "dpa_size per device is size / ways"
        assert ids == list(r.devices)
    # Every device a region uses is mapped (by PCI path) before the first region; the
    # program first waits for all of the topology's memdevs.
    lines = plan.splitlines()
    first_region = next(i for i, ln in enumerate(lines) if ln.startswith("region "))
    finds = [i for i, ln in enumerate(lines) if ln.startswith("memdev ")]
    assert finds and max(finds) < first_region
    assert _steps(plan, "memdevs") == [[str(len(t.cxl.devices)), "30"]]
    assert lines.index(f"memdevs {len(t.cxl.devices)} 30") < min(finds)


def test_interleave_devices_in_position_order_with_their_keys():
    plan = setup_plan(load("cxl-interleave").topology).splitlines()
    assert "memdev mem0 0c/00.0/00.0 -" in plan
    assert "memdev mem1 de/00.0/00.0 -" in plan
    assert "region 0 ram 2 256 536870912 268435456 system-ram mem0 mem1" in plan


def test_single_and_pmem_steps():
    single = setup_plan(load("cxl-single").topology).splitlines()
    assert "region 0 ram 1 256 268435456 268435456 system-ram cxl-vmem0" in single
    pmem = setup_plan(load("cxl-pmem").topology).splitlines()
    assert "memdev pmem0 0c/00.0/00.0 1" in pmem, "the topology's serial is checked"
    assert "region 0 pmem 1 256 268435456 268435456 devdax pmem0" in pmem


def test_demotion_written_only_when_set():
    assert not _steps(setup_plan(load("cxl-single").topology), "demotion")
    tiered = [p for p in preset_names() if load(p).topology.guest.demotion is not None]
    for p in tiered:
        want = "true" if load(p).topology.guest.demotion else "false"
        assert _steps(setup_plan(load(p).topology), "demotion") == [[want]]


# --- the command ----------------------------------------------------------

def test_command_writes_the_plan_and_runs_the_program(tmp_path):
    """The command, run by the host's sh with the program and paths pointed into tmp_path."""
    plan = setup_plan(load("cxl-interleave").topology).replace("memdevs 2 30", "memdevs 2 0")  # no waiting here
    cmd = setup_command(plan)
    assert len(cmd.encode()) < MAX_COMMAND_BYTES
    run_dir = tmp_path / "run"
    local = (cmd.replace("/tmp/numa-harness", str(run_dir))
             .replace("exec /usr/lib/numa-harness/bin/cxl-setup", f"exec sh {guest_files_dir() / 'cxl-setup.sh'}"))
    empty = tmp_path / "sys"
    empty.mkdir()
    env = {**os.environ, SYSFS_ENV: str(empty), "TMPDIR": str(tmp_path)}
    r = subprocess.run(["sh", "-c", local], capture_output=True, text=True, timeout=60, env=env)
    assert (run_dir / "cxl-setup.plan").read_text() == plan
    # The program ran on it: its plan check passed, its first wait (for the memdevs) ran.
    assert r.returncode == 1 and parse_error(r.stdout)[0] == "find memdevs", r.stdout + r.stderr


def test_command_too_long_for_dropbear_is_refused():
    with pytest.raises(GuestSetupError, match="too long"):
        setup_command("demotion true\n" * 1000)


def test_no_setup_runs_nothing():
    t = load("numa-basic").topology
    assert not t.guest.regions and t.guest.demotion is None
    assert apply_guest_setup(None, t) == SetupResult()  # the VM is never touched


# --- memdev mapping -------------------------------------------------------

def test_pci_keys():
    sw = load("cxl-switch").topology
    assert [memdev_pci_key(sw, d) for d in ("mem0", "mem1", "mem2")] == [
        "0c/00.0/00.0/00.0/00.0", "0c/00.0/00.0/01.0/00.0", "0c/00.0/00.0/02.0/00.0"]
    assert memdev_pci_key(load("cxl-single").topology, "cxl-vmem0") == "0c/00.0/00.0"


# --- parsing --------------------------------------------------------------

DATA = Path(__file__).parent / "data"


def test_parse_recorded_interleave_output():
    """Recorded from a cxl-interleave guest."""
    text = (DATA / "cxl-setup-interleave.out").read_text()
    res = parse_setup_output(text)
    assert res.memdevs == {"mem0": "mem0", "mem1": "mem1"}
    assert res.demotion is None and res.output == text
    (r,) = res.regions
    assert (r.name, r.size, r.node, r.mode, r.online, r.dax) == ("region0", 512 << 20, 1, "ram", "system-ram", "dax0.0")
    assert r.memdevs == ("mem0", "mem1") and r.decoders == ("decoder3.0", "decoder4.0")


def test_parse_recorded_cascade_output():
    """Recorded from the live test's cascaded-switch guest: movable RAM, devdax, demotion."""
    res = parse_setup_output((DATA / "cxl-setup-cascade.out").read_text())
    assert res.demotion is True
    assert set(res.memdevs) == {"a", "b"}
    movable, devdax = res.regions
    assert (movable.mode, movable.online, devdax.online) == ("ram", "system-ram-movable", "devdax")
    assert movable.memdevs == (res.memdevs["b"],) and devdax.memdevs == (res.memdevs["a"],)
    assert movable.size == devdax.size == 256 << 20
    assert (movable.name, movable.dax, movable.decoders) == ("region0", "dax0.0", ("decoder6.0",))
    assert (devdax.name, devdax.dax, devdax.node) == ("region1", "dax1.0", 1)


def test_parse_demotion_only():
    res = parse_setup_output("demotion enabled=true\ndone regions=0\n")
    assert res.regions == [] and res.demotion is True and res.memdevs == {}


def test_parse_region_without_node():
    res = parse_setup_output("region region3 committed size=4096 node= mode=ram online=devdax dax=dax3.0 "
                             "memdevs=mem0 decoders=decoder2.0\ndone regions=1\n")
    assert res.regions[0].node is None and res.regions[0].dax == "dax3.0"


@pytest.mark.parametrize("text", [
    "memdev x mem0 pci=0c/00.0/00.0 serial=0x0\n",                     # cut off: no done line
    "region region0 committed size=1 node=0 mode=ram online=devdax dax=d memdevs=m decoders=d\n",
    "done regions=1\n",                                                    # a region line lost
    "region region0 committed node=0 mode=ram online=devdax\ndone regions=1\n",   # no size
])
def test_parse_incomplete_output_raises(text):
    with pytest.raises(GuestSetupError) as e:
        parse_setup_output(text)
    assert isinstance(e.value, GuestCommandError)


def test_parse_error_line():
    out = ("memdev cxl-vmem0 mem0 pci=0c/00.0/00.0 serial=0x0\n"
           "error step=commit file=/sys/bus/cxl/devices/region0/commit msg=writing '1': No such device or address\n"
           "dmesg [   9.1] cxl region0: Failed to synchronize CPU cache state\n")
    assert parse_error(out) == ("commit", "/sys/bus/cxl/devices/region0/commit",
                                "writing '1': No such device or address")
    assert parse_error("all fine\n") is None


CUSTOM = """
description: two bridges, a cascaded switch, two windows, movable + devdax, demotion
nodes:
  - {id: 0, cpus: 0-1, memory: 1G}
cxl:
  host_bridges:
    - {id: hb0, bus_nr: 12, root_ports: [{id: rpa}, {id: rpb}]}
    - {id: hb1, bus_nr: 100, root_ports: [{id: rpc}]}
  switches:
    - {id: us0, upstream: rpb, downstream_ports: [{id: d0}, {id: d1}]}
    - {id: us1, upstream: d1, downstream_ports: [{id: e0}, {id: e1}, {id: e2}]}
  devices:
    - {id: a, port: rpa, volatile: 512M, serial: 7}
    - {id: b, port: e2, volatile: 256M}
    - {id: c, port: rpc, volatile: 256M}
  windows:
    - {targets: [hb0], size: 4G}
    - {targets: [hb0, hb1], size: 4G, granularity: 1K}
guest:
  regions:
    - {window: 0, devices: [a], online: system-ram-movable}
    - {window: 1, devices: [b, c], granularity: 1K, online: devdax}
  demotion: true
"""


def test_custom_topology_keys_order_and_demotion():
    t = parse(CUSTOM, "custom.yaml")
    assert memdev_pci_key(t, "a") == "0c/00.0/00.0"
    assert memdev_pci_key(t, "b") == "0c/01.0/00.0/01.0/00.0/02.0/00.0"   # rpb, us0, d1, us1, e2, device
    assert memdev_pci_key(t, "c") == "64/00.0/00.0"
    assert setup_plan(t).splitlines() == [
        "# numa-harness cxl-setup plan",
        "memdevs 3 30",
        "memdev a 0c/00.0/00.0 7",
        "memdev b 0c/01.0/00.0/01.0/00.0/02.0/00.0 -",
        "memdev c 64/00.0/00.0 -",
        "region 0 ram 1 256 536870912 536870912 system-ram-movable a",
        "region 1 ram 2 1024 536870912 268435456 devdax b c",
        "demotion true",
    ]
