"""``files/cgroup.sh`` run on the host (busybox and dash) against a fake cgroup tree (plain files),
with the command lines :mod:`harness.guest.cgroup` builds, and its parsers."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from harness.errors import GuestCommandError
from harness.guest import cgroup as cg
from harness.resources import guest_files_dir

PROGRAM = guest_files_dir() / "cgroup.sh"


def run(sh: list[str], command: str) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[0] == cg.CGROUP
    return subprocess.run([*sh, str(PROGRAM), *argv[1:]], capture_output=True, text=True, timeout=30)


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "cgroup"
    r.mkdir()
    (r / "cgroup.subtree_control").write_text("cpu\n")
    (r / "cgroup.procs").write_text("1\n2\n3\n")
    return r


def test_make_enables_the_controllers_in_the_parent_and_creates_it(guest_sh, root):
    r = run(guest_sh, cg.make(str(root / "g"), "memory"))
    assert r.returncode == 0 and r.stdout == f"cgroup path={root / 'g'}\n", r.stdout
    assert (root / "cgroup.subtree_control").read_text() == "+memory\n" and (root / "g").is_dir()


def test_run_joins_then_execs_the_command(guest_sh, root):
    (root / "g").mkdir()
    r = run(guest_sh, cg.run_in(str(root / "g"), "sh -c 'echo $$'"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "g" / "cgroup.procs").read_text() == r.stdout   # the pid that joined is the command's
    assert cg.run_in("/sys/fs/cgroup/g", "place --size 4") == f"{cg.CGROUP} run /sys/fs/cgroup/g place --size 4"


def test_reclaim_reports_the_kernels_refusal(guest_sh, root):
    (root / "g").mkdir()
    r = run(guest_sh, cg.reclaim(str(root / "g"), "8M"))
    assert cg.parse_reclaim(r.stdout) == cg.Reclaimed(True) and (root / "g" / "memory.reclaim").read_text() == "8M\n"
    (root / "g" / "memory.reclaim").unlink()
    (root / "g" / "memory.reclaim").mkdir()   # a write that fails, as EAGAIN does
    got = cg.parse_reclaim(run(guest_sh, cg.reclaim(str(root / "g"), "8M")).stdout)
    assert not got.ok and got.reason == "Is a directory"


def test_confine_and_release(guest_sh, root):
    r = run(guest_sh, cg.confine(str(root / "c"), "0"))
    assert cg.parse_confine(r.stdout) == (3, 3)     # a plain file keeps its lines: all 3 still "left"
    assert (root / "c" / "cpuset.mems").read_text() == "0\n" and "+cpuset" in (root / "cgroup.subtree_control").read_text()
    (root / "c" / "cgroup.procs").write_text("7\n")
    r = run(guest_sh, cg.release(str(root / "c")))
    assert r.stdout.startswith(f"release path={root / 'c'} moved=1")


def test_errors_are_typed():
    with pytest.raises(GuestCommandError, match="step=usage"):
        cg.parse_reclaim("error step=usage file=cgroup msg=usage: cgroup reclaim PATH AMOUNT\n")
    with pytest.raises(GuestCommandError, match="no 'confine' line"):
        cg.parse_confine("")
