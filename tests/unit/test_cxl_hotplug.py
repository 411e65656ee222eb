"""CXL hot-plug, host side: the ``hotplug`` port field (argv, validation), the QMP arguments that
plug a device in again, the guest program's region lookup on a fake sysfs, and the checks
``vm.cxl`` makes before it touches QEMU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import TopologyError
from harness.guest.cxl import CxlOpError, CxlOps
from harness.guest.setup import SetupResult
from harness.qemu.argv import machine_argv, type3_hotplug_qmp
from harness.resources import guest_files_dir
from harness.topology import load, parse

LIVE = Path(__file__).parents[1] / "live" / "topologies"
PROGRAM = guest_files_dir() / "cxl-hotplug.sh"
SHELLS = [s for s in (["busybox", "sh"], ["dash"]) if shutil.which(s[0])]


def test_hotplug_field_reaches_the_root_port_and_unset_changes_nothing():
    argv = machine_argv(load(LIVE / "cxl-hotplug.yaml").topology, accel="tcg")
    rps = [a for a in argv if a.startswith("cxl-rp,")]
    assert rps[0].endswith(",hotplug=on") and "hotplug" not in rps[1]
    assert not any("hotplug" in a for a in machine_argv(load("cxl-switch").topology, accel="tcg"))


def test_hotplug_on_a_switch_downstream_port_is_refused_with_the_reason():
    text = (Path(__file__).parents[2] / "harness/topology/presets/cxl-switch.yaml").read_text()
    text = text.replace("[{id: dsp0}, {id: dsp1}", "[{id: dsp0, hotplug: true}, {id: dsp1}")
    with pytest.raises(TopologyError) as e:
        parse(text, "x.yaml")
    msg = str(e.value)
    assert "downstream_ports[0].hotplug" in msg and "power controller" in msg and "DEVICE_DELETED" in msg


def test_plug_arguments_use_fresh_backends_of_the_same_kind_and_file():
    t = load("cxl-pmem-interleave").topology
    assert t.cxl
    objs, dev = type3_hotplug_qmp(t.cxl.devices[0], "/data", 2)
    assert [o["id"] for o in objs] == ["hmem-pmem0-pmem-2", "hmem-pmem0-lsa-2"]
    assert objs[0] == {"qom-type": "memory-backend-file", "id": "hmem-pmem0-pmem-2", "size": 256 << 20, "share": True,
                       "mem-path": "/data/cxl-pmem-interleave/pmem0-pmem.raw"}
    assert dev["driver"] == "cxl-type3" and dev["bus"] == "dsp0" and dev["id"] == "pmem0"
    assert dev["persistent-memdev"] == "hmem-pmem0-pmem-2" and dev["lsa"] == "hmem-pmem0-lsa-2" and dev["sn"]
    vol = load(LIVE / "cxl-hotplug.yaml").topology
    assert vol.cxl
    objs, dev = type3_hotplug_qmp(vol.cxl.devices[0], None, 1)
    assert objs == [{"qom-type": "memory-backend-ram", "id": "hmem-mem0-vmem-1", "size": 256 << 20, "share": True}]
    assert dev == {"driver": "cxl-type3", "bus": "rp0", "volatile-memdev": "hmem-mem0-vmem-1", "id": "mem0"}


class _NoGuest:
    def __init__(self, topology):
        self.topology = topology
        self.setup = SetupResult(memdevs={"mem0": "mem3"})
        self.calls: list[str] = []

    def run(self, command, *, timeout=0, check=True):
        self.calls.append(command)
        raise AssertionError("no guest command expected")


def test_remove_refuses_a_port_not_declared_hotpluggable_before_anything_runs():
    t = load("cxl-switch").topology
    guest, qmp = _NoGuest(t), []
    ops = CxlOps(guest, lambda c, a: qmp.append(c))
    with pytest.raises(CxlOpError) as e:
        ops.remove_device("mem0")
    assert "not declared hot-pluggable" in str(e.value) and not qmp and not guest.calls
    with pytest.raises(CxlOpError):
        ops.add_device("nosuch")


@pytest.mark.skipif(not SHELLS, reason="neither busybox nor dash on the host")
@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_program_finds_the_regions_of_a_memdev(sh, tmp_path):
    sysfs = tmp_path / "sys"
    cxl = sysfs / "bus/cxl/devices"
    cxl.mkdir(parents=True)
    for n, ep in (("mem0", 3), ("mem1", 4)):
        dev = sysfs / f"devices/pci0000:0c/{n}"
        dev.mkdir(parents=True)
        (cxl / n).symlink_to(os.path.relpath(dev, cxl))
        (cxl / f"endpoint{ep}").mkdir()
        (cxl / f"endpoint{ep}/uport").symlink_to(os.path.relpath(dev, cxl / f"endpoint{ep}"))
    (cxl / "region0").mkdir()
    (cxl / "region0/target0").write_text("decoder4.0\n")
    (cxl / "region1").mkdir()
    (cxl / "region1/target0").write_text("decoder3.0\n")
    (cxl / "region1/target1").write_text("decoder4.1\n")
    env = {**os.environ, "HARNESS_SYSFS": str(sysfs)}
    run = lambda *a: subprocess.run([*sh, str(PROGRAM), *a], env=env, capture_output=True, text=True, timeout=30)  # noqa: E731
    assert run("regions", "mem1").stdout.split("\n")[:2] == ["region region0", "region region1"]
    assert run("regions", "mem0").stdout.strip() == "region region1"
    r = run("gone", "mem1", "1")
    assert r.returncode == 1 and "still there after 1 s" in r.stdout
    assert run("gone", "mem7", "1").stdout.strip() == "gone memdev=mem7"
    assert run("teardown").returncode == 2
