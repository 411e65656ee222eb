"""``files/services.sh`` run on the host (busybox and dash) against a fake sysfs, with the command lines
:mod:`harness.guest.services` builds, and its parsers."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import GuestCommandError
from harness.guest import services as sv
from harness.resources import guest_files_dir

PROGRAM = guest_files_dir() / "services.sh"


@pytest.fixture
def sysfs(tmp_path) -> Path:
    root = tmp_path / "sys"
    node = root / "devices/system/node/node1"
    (node / "hugepages/hugepages-2048kB").mkdir(parents=True)
    (node / "hugepages/hugepages-2048kB/nr_hugepages").write_text("0\n")
    (node / "compact").write_text("")
    (root / "kernel/mm/ksm").mkdir(parents=True)
    for f, v in (("run", "0"), ("pages_to_scan", "100"), ("sleep_millisecs", "20")):
        (root / "kernel/mm/ksm" / f).write_text(v + "\n")
    (root / "kernel/mm/lru_gen").mkdir(parents=True)
    (root / "kernel/mm/lru_gen/enabled").write_text("0x0007\n")
    return root


def run(sh: list[str], sysfs: Path, command: str) -> str:
    argv = shlex.split(command)
    assert argv[0] == sv.SERVICES
    r = subprocess.run([*sh, str(PROGRAM), *argv[1:]], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "HARNESS_SYSFS": str(sysfs)})
    return r.stdout


def test_probe_sees_what_the_kernel_has(guest_sh, sysfs):
    assert sv.parse_probe(run(guest_sh, sysfs, sv.probe(1))) == sv.Probe(ksm=True, compact=True, lru_gen="0x0007")
    shutil.rmtree(sysfs / "kernel/mm/ksm")
    (sysfs / "kernel/mm/lru_gen/enabled").unlink()
    (sysfs / "devices/system/node/node1/compact").unlink()
    assert sv.parse_probe(run(guest_sh, sysfs, sv.probe(1))) == sv.Probe(ksm=False, compact=False, lru_gen=None)


def test_hugetlb_asks_reads_and_gives_back(guest_sh, sysfs):
    assert sv.parse_hugetlb(run(guest_sh, sysfs, sv.hugetlb(1, 4))) == 4     # a plain file keeps what was written
    assert (sysfs / "devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages").read_text() == "0\n"
    assert sv.parse_hugetlb(run(guest_sh, sysfs, sv.hugetlb(2, 4))) == 0     # no pool: nothing reserved


def test_lru_gen_is_written_and_read_back(guest_sh, sysfs):
    assert run(guest_sh, sysfs, sv.lru_gen("n")) == "lru_gen now=n\n"


def test_ksm_runs_then_unmerges_and_stops(guest_sh, sysfs):
    text = run(guest_sh, sysfs, sv.ksm(os.getpid(), 1 << 30, 1))   # never reaches the count: stops after 1 s
    assert sv.parse_ksm(text) >= 0 and "seconds=" in text
    ksm = sysfs / "kernel/mm/ksm"
    assert [(ksm / f).read_text() for f in ("pages_to_scan", "sleep_millisecs", "run")] == ["4096\n", "0\n", "2\n"]


def test_compaction_and_its_refusal(guest_sh, sysfs):
    assert sv.parse_compact(run(guest_sh, sysfs, sv.compact(1))) is None
    f = sysfs / "devices/system/node/node1/compact"
    f.unlink()
    f.mkdir()
    with pytest.raises(GuestCommandError, match="compacting node 1 failed: Is a directory"):
        sv.parse_compact(run(guest_sh, sysfs, sv.compact(1)))
    with pytest.raises(GuestCommandError, match="no compaction file"):
        sv.parse_compact(run(guest_sh, sysfs, sv.compact(3)))
