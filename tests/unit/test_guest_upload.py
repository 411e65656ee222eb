"""harness.guest.upload: the commands run by a real shell rebuild the bytes; a failed step or a
changed byte in the guest's copy is an error naming what was copied."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from harness.errors import GuestCommandError
from harness.guest.upload import upload


class Shell:
    """A guest stand-in that runs each command in the host's sh (only for this pure-plumbing test)."""

    def __init__(self, corrupt: bool = False, fail_at: int | None = None):
        self.corrupt, self.fail_at, self.n = corrupt, fail_at, 0

    def run(self, command, *, timeout=60, check=True):
        self.n += 1
        if self.fail_at == self.n:
            return SimpleNamespace(exit_status=1, stdout="", stderr="No space left on device")
        if self.corrupt and command.startswith("base64 -d"):
            command = command.replace("&& md5sum", "&& echo x >> " + command.split()[-1] + " && md5sum")
        p = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)
        return SimpleNamespace(exit_status=p.returncode, stdout=p.stdout, stderr=p.stderr)


def test_the_bytes_arrive_whole(tmp_path):
    data = bytes(range(256)) * 100
    seen = []
    upload(Shell(), data, str(tmp_path / "f.bin"), "f.bin", say=lambda i, n: seen.append((i, n)))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert seen and seen[0][0] == 0


def test_a_changed_copy_and_a_failed_step_are_errors(tmp_path):
    with pytest.raises(GuestCommandError, match="f.bin arrived corrupted"):
        upload(Shell(corrupt=True), b"abc" * 1000, str(tmp_path / "f.bin"), "f.bin")
    with pytest.raises(GuestCommandError, match="copying f.bin into the guest failed: No space left"):
        upload(Shell(fail_at=2), b"abc" * 1000, str(tmp_path / "g.bin"), "f.bin")
