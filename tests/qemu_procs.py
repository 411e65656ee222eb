"""QEMU processes a test started, found through /proc by an environment entry it gave them.

The leak checks (the fault matrix, the CLI's live tests) tag every QEMU they start with
``KEY=VALUE`` in its environment, so they see only their own and never a user's.
"""

from __future__ import annotations

from pathlib import Path


def qemus_with_env(entry: str) -> list[int]:
    """Live (not zombie or dead) QEMU processes whose environment holds ``entry`` (``KEY=VALUE``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "comm").read_text().startswith("qemu-system"):
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            if entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found
