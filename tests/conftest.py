"""Test-session isolation: background-VM state and file-backed guest memory go to a fresh
folder per test run, so a run never meets what an earlier run (or the user's own VMs) left
behind (e.g. a persistent-memory label written by a previous boot)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_RUN_DIR = tempfile.mkdtemp(prefix="numa-harness-tests-")
for var, sub in (("NUMA_HARNESS_STATE", "state"), ("NUMA_HARNESS_DATA", "data")):
    if var not in os.environ:
        os.environ[var] = os.path.join(_RUN_DIR, sub)
atexit.register(shutil.rmtree, _RUN_DIR, ignore_errors=True)

# tests/data holds inputs, not tests: its ktap_*.sh scripts boot guests when run, so a plain
# `pytest` (which would collect them with the plugin's KTAP collector on) leaves them alone;
# tests/live/test_selftest_live.py runs them on purpose (--ktap-dir, or by path).
collect_ignore = ["data"]
