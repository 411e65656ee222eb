"""Guest set-up script: rendering, shell syntax, memdev keys, output parsing (pure; no VM)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness.errors import GuestCommandError
from harness.guest.setup import (
    CHUNK_LIMIT,
    GuestSetupError,
    SetupResult,
    apply_guest_setup,
    memdev_pci_key,
    parse_error,
    parse_setup_output,
    region_size,
    region_ways,
    setup_script,
    upload_commands,
)
from harness.topology import load, preset_names

REGION_PRESETS = [p for p in preset_names() if load(p).topology.guest.regions]
SHELLS = [s for s in (["dash", "-n"], ["busybox", "sh", "-n"]) if shutil.which(s[0])]


def _body(script: str, func: str) -> str:
    """The text of shell function ``func`` in the rendered script."""
    m = re.search(rf"^{func}\(\) {{\n(.*?)^}}\n", script, re.S | re.M)
    assert m, f"{func} not in script"
    return m.group(1)


def _topology_part(script: str) -> list[str]:
    return script.split("# --- this topology ---\n", 1)[1].splitlines()


def test_region_presets_are_the_expected_ones():
    assert {"cxl-single", "cxl-interleave", "cxl-switch", "cxl-pmem"} <= set(REGION_PRESETS)


@pytest.mark.parametrize("preset", REGION_PRESETS)
def test_create_region_call_carries_the_topology(preset):
    t = load(preset).topology
    lines = _topology_part(setup_script(t))
    calls = [ln.split() for ln in lines if ln.startswith("create_region ")]
    assert len(calls) == len(t.guest.regions)
    for call, r in zip(calls, t.guest.regions):
        _, window, mode, ways, gran, size, dpa, online, *mds = call
        assert (int(window), mode, online) == (r.window, r.mode, r.online)
        assert int(ways) == region_ways(r) == len(r.devices)
        assert int(gran) == int(r.granularity)
        assert int(size) == region_size(t, r)
        assert int(dpa) * int(ways) == int(size), "dpa_size per device is size / ways"
        assert len(mds) == len(r.devices)
    # Every device a region uses is mapped (by PCI path) before the first region.
    first_region = next(i for i, ln in enumerate(lines) if ln.startswith("create_region"))
    finds = [i for i, ln in enumerate(lines) if "find_memdev" in ln]
    assert finds and max(finds) < first_region


def test_interleave_devices_in_position_order_with_their_keys():
    t = load("cxl-interleave").topology
    lines = _topology_part(setup_script(t))
    assert "MD0=$(find_memdev mem0 0c/00.0/00.0 -) || exit 1" in lines
    assert "MD1=$(find_memdev mem1 de/00.0/00.0 -) || exit 1" in lines
    assert 'create_region 0 ram 2 256 536870912 268435456 system-ram "$MD0" "$MD1"' in lines


def test_single_and_pmem_calls():
    single = _topology_part(setup_script(load("cxl-single").topology))
    assert 'create_region 0 ram 1 256 268435456 268435456 system-ram "$MD0"' in single
    pmem = _topology_part(setup_script(load("cxl-pmem").topology))
    assert "MD0=$(find_memdev pmem0 0c/00.0/00.0 1) || exit 1" in pmem, "the topology's serial is checked"
    assert 'create_region 0 pmem 1 256 268435456 268435456 devdax "$MD0"' in pmem


def test_sysfs_writes_in_kernel_order():
    """The order cxl create-region uses; commit only after every target, bind after commit."""
    body = _body(setup_script(load("cxl-single").topology), "create_region")
    steps = [
        'rd "$cr_f" "create region"',                 # read create_*_region for the name
        'wr "$cr_f" "$cr_name" "create region"',      # write it back
        'wr "$cr_r/uuid"',                            # pmem only
        'wr "$cr_r/interleave_granularity" "$cr_gran"',
        'wr "$cr_r/interleave_ways" "$cr_ways"',
        'cr_dec=$(free_decoder "$cr_ep")',
        'wr "$CXL/$cr_dec/mode" "$cr_mode"',
        'wr "$CXL/$cr_dec/dpa_size" "$cr_per"',
        'wr "$cr_r/size" "$cr_size"',
        'wr "$cr_r/target$cr_i" "$cr_dec"',
        'wr "$cr_r/commit" 1',
        'set_auto_online "$cr_online"',
        'wr /sys/bus/cxl/drivers/cxl_region/bind "$cr_name"',
    ]
    pos = [body.index(s) for s in steps]
    assert pos == sorted(pos), [s for s, p in zip(steps, pos)]
    assert "cr_f=$cr_root/create_${cr_mode}_region" in body
    assert "cr_root=$CXL/decoder0.$cr_win" in body


def test_free_decoder_wants_mode_none_and_zero_dpa():
    body = _body(setup_script(load("cxl-single").topology), "free_decoder")
    assert '[ "$fd_mode" = none ]' in body and '"$((fd_size))" -eq 0' in body
    assert "sort -t. -k2 -n" in body, "decoders are taken in numeric order"


def test_online_types():
    s = setup_script(load("cxl-single").topology)
    auto = _body(s, "set_auto_online")
    assert "system-ram) sa_v=online" in auto and "system-ram-movable) sa_v=online_movable" in auto
    assert "*) sa_v=offline" in auto
    assert "trap restore_auto_online EXIT" in s


def test_demotion_written_only_when_set():
    t = load("cxl-single").topology
    assert not any(ln.startswith("set_demotion") for ln in _topology_part(setup_script(t)))
    tiered = [p for p in preset_names() if load(p).topology.guest.demotion is not None]
    for p in tiered:
        want = "true" if load(p).topology.guest.demotion else "false"
        assert f"set_demotion {want}" in _topology_part(setup_script(load(p).topology))


@pytest.mark.skipif(not SHELLS, reason="no dash or busybox on the host")
@pytest.mark.parametrize("preset", preset_names())
def test_script_parses_in_dash_and_busybox(preset, tmp_path):
    path = tmp_path / "setup.sh"
    path.write_text(setup_script(load(preset).topology))
    for sh in SHELLS:
        r = subprocess.run([*sh, str(path)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"{sh[0]}: {r.stderr}"


# --- memdev mapping -------------------------------------------------------

def test_pci_keys():
    sw = load("cxl-switch").topology
    assert [memdev_pci_key(sw, d) for d in ("mem0", "mem1", "mem2")] == [
        "0c/00.0/00.0/00.0/00.0", "0c/00.0/00.0/01.0/00.0", "0c/00.0/00.0/02.0/00.0"]
    assert memdev_pci_key(load("cxl-single").topology, "cxl-vmem0") == "0c/00.0/00.0"


# Seen in the guest (cxl-switch boot): real sysfs paths of the memdevs.
GUEST_PATHS = {
    "/sys/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/0000:0e:00.0/0000:0f:00.0/mem0": "0c/00.0/00.0/00.0/00.0",
    "/sys/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/0000:0e:01.0/0000:10:00.0/mem1": "0c/00.0/00.0/01.0/00.0",
    "/sys/devices/pci0000:de/0000:de:00.0/0000:df:00.0/mem12": "de/00.0/00.0",
}


@pytest.mark.skipif(not SHELLS, reason="no dash or busybox on the host")
@pytest.mark.parametrize("path,key", sorted(GUEST_PATHS.items()))
def test_script_pcikey_matches_python_key(path, key, tmp_path):
    lib = setup_script(load("numa-basic").topology)
    script = tmp_path / "k.sh"
    script.write_text(lib.split("# --- this topology ---")[0] + f"pcikey {path}\ntrap - EXIT\n")
    for sh in SHELLS:
        r = subprocess.run([sh[0], *sh[1:-1], str(script)], capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == key, (sh[0], r.stdout, r.stderr)


@pytest.mark.skipif(not SHELLS, reason="no dash or busybox on the host")
def test_failed_write_names_step_file_and_errno(tmp_path):
    """The script's write helper, run by the host shell against a missing file."""
    lib = setup_script(load("numa-basic").topology).split("# --- this topology ---")[0]
    script = tmp_path / "w.sh"
    target = tmp_path / "nodir" / "commit"
    script.write_text(lib.replace("/tmp/harness-guest-setup.err", str(tmp_path / "err"))
                      + f'wr {target} 1 commit\necho not reached\n')
    for sh in SHELLS:
        r = subprocess.run([sh[0], *sh[1:-1], str(script)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and "not reached" not in r.stdout
        step, file, msg = parse_error(r.stdout)
        assert (step, file) == ("commit", str(target))
        assert msg.startswith("writing '1': ") and ("nonexistent" in msg or "No such file" in msg), msg


# --- transport ------------------------------------------------------------

def test_upload_reassembles_the_script_below_dropbears_limit(tmp_path):
    script = setup_script(load("cxl-interleave").topology)
    big = script + "".join(f"# padding line {i} {'x' * 80}\n" for i in range(300))
    dest = tmp_path / "s.sh"
    cmds = upload_commands(big, str(dest))
    assert len(cmds) > 1 and all(len(c) < 9000 for c in cmds) and CHUNK_LIMIT < 9000
    for c in cmds:
        subprocess.run(["sh", "-c", c], check=True, timeout=10)
    assert dest.read_text() == big


def test_no_setup_runs_nothing():
    t = load("numa-basic").topology
    assert not t.guest.regions and t.guest.demotion is None
    assert apply_guest_setup(None, t) == SetupResult()  # the VM is never touched


# --- parsing --------------------------------------------------------------

# Verbatim from a cxl-interleave boot (guest mem0 is QEMU's mem1 there).
INTERLEAVE_OUT = """memdev mem0 mem1 pci=0c/00.0/00.0 serial=0x0
memdev mem1 mem0 pci=de/00.0/00.0 serial=0x0
region region0 committed size=536870912 node=1 mode=ram online=system-ram dax=dax0.0 memdevs=mem1,mem0 decoders=decoder4.0,decoder3.0
summary {"regions":[{"name":"region0","size":536870912,"node":1,"mode":"ram","online":"system-ram","dax":"dax0.0","memdevs":["mem1","mem0"],"decoders":["decoder4.0","decoder3.0"]}],"memdevs":{"mem0":"mem1","mem1":"mem0"},"demotion":null}
"""


def test_parse_summary():
    res = parse_setup_output(INTERLEAVE_OUT)
    assert res.memdevs == {"mem0": "mem1", "mem1": "mem0"}
    assert res.demotion is None
    (r,) = res.regions
    assert (r.name, r.size, r.node, r.mode, r.online, r.dax) == ("region0", 512 << 20, 1, "ram", "system-ram", "dax0.0")
    assert r.memdevs == ("mem1", "mem0") and r.decoders == ("decoder4.0", "decoder3.0")


def test_parse_empty_summary_and_demotion():
    res = parse_setup_output('demotion enabled=true\nsummary {"regions":[],"memdevs":{},"demotion":true}\n')
    assert res.regions == [] and res.demotion is True


def test_parse_without_summary_raises():
    with pytest.raises(GuestSetupError) as e:
        parse_setup_output("memdev x mem0 pci=0c/00.0/00.0 serial=0x0\n")
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


def test_custom_topology_keys_order_and_demotion(tmp_path):
    from harness.topology import parse
    t = parse(CUSTOM, "custom.yaml")
    assert memdev_pci_key(t, "a") == "0c/00.0/00.0"
    assert memdev_pci_key(t, "b") == "0c/01.0/00.0/01.0/00.0/02.0/00.0"   # rpb, us0, d1, us1, e2, device
    assert memdev_pci_key(t, "c") == "64/00.0/00.0"
    lines = _topology_part(setup_script(t))
    assert "MD0=$(find_memdev a 0c/00.0/00.0 7) || exit 1" in lines
    assert 'create_region 0 ram 1 256 536870912 536870912 system-ram-movable "$MD0"' in lines
    assert 'create_region 1 ram 2 1024 536870912 268435456 devdax "$MD1" "$MD2"' in lines
    assert lines.index("set_demotion true") > max(i for i, ln in enumerate(lines) if ln.startswith("create_region"))
    path = tmp_path / "s.sh"
    path.write_text(setup_script(t))
    for sh in SHELLS:
        assert subprocess.run([*sh, str(path)], capture_output=True, timeout=10).returncode == 0
