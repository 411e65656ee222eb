"""Where the harness keeps things on the host (caches, background-VM state). One place, so every module agrees.

Files shipped with the harness are found through :mod:`harness.resources`,
never through the source tree.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$NUMA_HARNESS_CACHE, else $XDG_CACHE_HOME/numa-harness, else ~/.cache/numa-harness."""
    env = os.environ.get("NUMA_HARNESS_CACHE")
    if env:
        p = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        p = Path(base) / "numa-harness"
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from harness.cachefs import cache_error

        raise cache_error(e, "creating the cache directory") from e
    return p


def state_dir() -> Path:
    """Background VMs' state: $NUMA_HARNESS_STATE, else $XDG_STATE_HOME/numa-harness/vms."""
    env = os.environ.get("NUMA_HARNESS_STATE")
    if env:
        p = Path(env)
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        p = Path(base) / "numa-harness" / "vms"
    p.mkdir(parents=True, exist_ok=True)
    if p.stat().st_mode & 0o077:  # VMs' keys and sockets live below: private whatever the umask
        os.chmod(p, 0o700)
    return p


def data_dir() -> Path:
    """Files a user keeps between boots (file-backed guest memory): $NUMA_HARNESS_DATA, else
    $XDG_DATA_HOME/numa-harness, else ~/.local/share/numa-harness."""
    env = os.environ.get("NUMA_HARNESS_DATA")
    if env:
        p = Path(env)
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        p = Path(base) / "numa-harness"
    p.mkdir(parents=True, exist_ok=True)
    return p
