"""The fault matrix: each test provokes one failure as a user (or an unkind one) would meet it.

Every test runs the real ``harness`` command as a subprocess and asserts its
exit status, its one-line cause, that no traceback reached stderr, and that no
QEMU it started is left: each test's QEMUs carry a unique environment tag and
are found by PID through /proc. Fakes stand in for the environment only (a
QEMU wrapper script, a 1 MiB tmpfs, a read-only mount), never for the harness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from qemu_procs import qemus_with_env

HARNESS = [sys.executable, "-m", "harness.cli"]
TAG_KEY = "NUMA_HARNESS_FAULT_TAG"


def qemus_tagged(tag: str) -> list[int]:
    """Live (non-zombie) QEMU processes whose environment carries ``tag``."""
    return qemus_with_env(f"{TAG_KEY}={tag}")


@dataclass
class Harness:
    """Runs ``harness`` with this test's tag, state root and temp directory."""

    tag: str
    state: Path
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, TAG_KEY: self.tag, "NUMA_HARNESS_STATE": str(self.state), "TMPDIR": str(self.tmp),
                **self.env, **(extra or {})}

    def run(self, *args: str, timeout: float = 300, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*HARNESS, *args], capture_output=True, timeout=timeout, env=self.environ(env),
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``harness``; its stderr goes to ``self.stderr_file`` (readable while it runs)."""
        self.stderr_file = self.tmp / f"stderr-{uuid.uuid4().hex[:8]}"
        with open(self.stderr_file, "wb") as err:
            return subprocess.Popen([*HARNESS, *args], stdout=subprocess.DEVNULL, stderr=err,
                                    stdin=subprocess.DEVNULL, env=self.environ(env))

    def stderr_so_far(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def qemus(self) -> list[int]:
        return qemus_tagged(self.tag)

    def state_of(self, name: str) -> dict:
        return json.loads((self.state / name / "vm.json").read_text())


def text(r: subprocess.CompletedProcess | bytes) -> str:
    data = r if isinstance(r, bytes) else r.stderr
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def assert_one_line_error(r: subprocess.CompletedProcess, status: int, cause: str) -> str:
    """Exit ``status``, an ``error:`` line containing ``cause``, no traceback. Returns that line."""
    err = text(r)
    assert "Traceback" not in err, err
    assert r.returncode == status, f"exit {r.returncode}, stderr:\n{err}"
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "harness")) and "error:" in ln]
    assert lines, err
    assert cause in lines[0], f"{cause!r} not in {lines[0]!r}\n{err}"
    return lines[0]


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    hh = Harness(tag=uuid.uuid4().hex, state=tmp_path / "vms", tmp=tmp)
    yield hh
    left = hh.qemus()
    for pid in left:  # never leave them running, but fail the test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == [], f"QEMU processes left behind: {left}"


@pytest.fixture(scope="session")
def default_kernel_files():
    """The default kernel (fetched once into the cache) for tests that need its files."""
    from harness.kernel.debian import default_kernel

    return default_kernel()


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``mount(opts, at=None)``: a small tmpfs at ``at`` (default ``tmp_path/mnt``), root only;
    unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(opts: str, at: Path | None = None) -> Path:
        mnt = at or tmp_path / "mnt"
        mnt.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=True)
        mounted.append(mnt)
        return mnt

    yield mount
    for m in reversed(mounted):
        subprocess.run(["umount", "-l", str(m)], check=False)
