"""Where names and numbers enter: VM names are names, never paths; ports and timeouts are checked while parsing."""

import argparse
import os
import stat

import pytest

from harness.cli.common import port, seconds, vm_name
from harness.errors import UsageError
from harness.vm.state import check_vm_name, make_private_dir, vm_dir


@pytest.mark.parametrize("bad", ["", ".", "..", "/tmp/somedir", "a/b", "../x", ".hidden", "-x", "a b", "x" * 65, "é"])
def test_bad_names_are_refused(bad):
    with pytest.raises(UsageError):
        check_vm_name(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        vm_name(bad)


@pytest.mark.parametrize("good", ["default", "t1", "cxl.single-2", "A_b"])
def test_good_names_stay_inside_the_state_root(good, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMA_HARNESS_STATE", str(tmp_path / "vms"))
    assert vm_dir(good).parent == tmp_path / "vms"


@pytest.mark.parametrize("bad", ["0", "-1", "70000", "x", "22.5"])
def test_ports(bad):
    with pytest.raises(argparse.ArgumentTypeError):
        port(bad)
    assert port("2222") == 2222


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_timeouts(bad):
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(bad)
    assert seconds("1.5") == 1.5


def test_state_dirs_are_private_whatever_the_umask(tmp_path, monkeypatch):
    old = os.umask(0)
    try:
        d = make_private_dir(tmp_path / "vms" / "t1")
        monkeypatch.setenv("NUMA_HARNESS_STATE", str(tmp_path / "root"))
        from harness.paths import state_dir

        root = state_dir()
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_reserve_vm_dir_never_hands_out_a_directory_twice(tmp_path):
    from harness.vm.state import reserve_vm_dir

    (tmp_path / "pytest-a-1").mkdir()  # a live VM's, or a failed boot's console log
    (tmp_path / "pytest-a-1" / "vm.json").write_text("{}")
    name, d = reserve_vm_dir("pytest-a-1", tmp_path)
    assert name == "pytest-a-1-2" and d == tmp_path / name and d.is_dir()
    assert (d.stat().st_mode & 0o777) == 0o700
    assert reserve_vm_dir("pytest-a-1", tmp_path)[0] == "pytest-a-1-3"
    assert (tmp_path / "pytest-a-1" / "vm.json").read_text() == "{}"
