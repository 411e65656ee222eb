"""CXL poison, host side: the guest program's output parsed (recorded from a 6.12 guest on
cxl-single: one record injected through debugfs, one through QEMU's QMP), its command lines,
the QMP arguments, and the program itself run against a fake debugfs/sysfs tree."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.guest.cxl import (
    CxlOpError,
    PoisonRecord,
    parse_poison_output,
    poison_command,
    qmp_poison_arguments,
)
from harness.guest.protocol import CXL_POISON
from harness.resources import guest_files_dir

DATA = Path(__file__).parent / "data" / "cxl-poison"
PROGRAM = guest_files_dir() / "cxl-poison.sh"
SHELLS = [s for s in (["busybox", "sh"], ["dash"]) if shutil.which(s[0])]


def test_recorded_poison_list_parses():
    r = parse_poison_output((DATA / "list-6.12.txt").read_text())
    assert r.done and r.hardware_corrupted_kb == 0
    assert r.records == (
        PoisonRecord(memdev="mem0", dpa=0x1000, length=64, source="Injected", hpa=0x110001000, region="region0"),
        PoisonRecord(memdev="mem0", dpa=0x2000, length=64, source="Internal", hpa=0x110002000, region="region0"),
    )


def test_unmapped_record_and_empty_list():
    r = parse_poison_output("poison memdev=mem1 trace_type=List region=- hpa=- dpa=0x40 length=0x80 source=Internal\n"
                            "meminfo hardware_corrupted_kb=-\ndone records=1\n")
    assert r.records[0].hpa is None and r.records[0].region is None and r.records[0].length == 128
    assert r.hardware_corrupted_kb is None
    assert parse_poison_output("meminfo hardware_corrupted_kb=4\ndone records=0\n").records == ()


def test_error_line_and_malformed_record_raise():
    with pytest.raises(CxlOpError) as e:
        parse_poison_output("error step=inject file=/sys/kernel/debug/cxl/mem0/inject_poison msg=writing '12': Invalid argument\n")
    assert "inject_poison" in str(e.value) and "Invalid argument" in str(e.value)
    with pytest.raises(CxlOpError):
        parse_poison_output("poison memdev=mem0 dpa=zz length=0x40\n")


def test_commands_and_qmp_arguments():
    assert poison_command("inject", "mem0", 0x1000) == f"{CXL_POISON} inject mem0 0x1000"
    assert poison_command("list", "mem3") == f"{CXL_POISON} list mem3"
    assert qmp_poison_arguments("cxl-vmem0", 0x4000, 128) == {"path": "/machine/peripheral/cxl-vmem0",
                                                             "start": 0x4000, "length": 128}
    for dpa, length in ((0x10, 64), (0, 0), (0, 100)):
        with pytest.raises(CxlOpError):
            qmp_poison_arguments("x", dpa, length)


def fake_tree(root: Path, debugfs: bool = True) -> dict[str, str]:
    sysfs = root / "sys"
    (sysfs / "bus/cxl/devices/mem0").mkdir(parents=True)
    (sysfs / "bus/cxl/devices/mem0/trigger_poison_list").write_text("")
    if debugfs:
        for f in ("inject_poison", "clear_poison"):
            p = root / "debug/cxl/mem0" / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")
    ev = root / "tracing/events/cxl/cxl_poison"
    ev.mkdir(parents=True)
    (ev / "enable").write_text("0\n")
    (root / "tracing/trace").write_text("# tracer: nop\n")
    (root / "tracing/trace_marker").write_text("")
    (root / "meminfo").write_text("MemTotal: 1 kB\nHardwareCorrupted:     8 kB\n")
    return {**os.environ, "HARNESS_SYSFS": str(sysfs), "HARNESS_DEBUGFS": str(root / "debug"),
            "HARNESS_TRACEFS": str(root / "tracing"), "HARNESS_MEMINFO": str(root / "meminfo")}


@pytest.mark.skipif(not SHELLS, reason="neither busybox nor dash on the host")
@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_program_writes_debugfs_and_triggers_the_list(sh, tmp_path):
    env = fake_tree(tmp_path)
    r = subprocess.run([*sh, str(PROGRAM), "inject", "mem0", "4096"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["injected memdev=mem0 dpa=0x1000", "meminfo hardware_corrupted_kb=8"]
    assert (tmp_path / "debug/cxl/mem0/inject_poison").read_text().strip() == "4096"
    r = subprocess.run([*sh, str(PROGRAM), "clear", "mem0", "0x1000"], env=env, capture_output=True, text=True, timeout=30)
    assert r.stdout.splitlines()[0] == "cleared memdev=mem0 dpa=0x1000"
    r = subprocess.run([*sh, str(PROGRAM), "list", "mem0"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert parse_poison_output(r.stdout).done and parse_poison_output(r.stdout).records == ()
    assert (tmp_path / "sys/bus/cxl/devices/mem0/trigger_poison_list").read_text().strip() == "1"
    assert (tmp_path / "tracing/events/cxl/cxl_poison/enable").read_text().strip() == "1"


@pytest.mark.skipif(not SHELLS, reason="neither busybox nor dash on the host")
@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_program_names_what_is_missing(sh, tmp_path):
    env = fake_tree(tmp_path, debugfs=False)
    r = subprocess.run([*sh, str(PROGRAM), "inject", "mem0", "0x1000"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    with pytest.raises(CxlOpError) as e:
        parse_poison_output(r.stdout)
    assert "inject_poison" in str(e.value) and "CONFIG_DEBUG_FS" in str(e.value)
    r = subprocess.run([*sh, str(PROGRAM), "list", "mem7"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no such CXL memdev" in r.stdout
    r = subprocess.run([*sh, str(PROGRAM), "inject", "nvme0", "1"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
