"""The installed QEMU accepts every preset's generated argv.

QEMU is started paused (-S, no kernel): machine creation (NUMA, HMAT, CXL
devices, fixed windows) happens before the first instruction runs, so a
rejected option shows up here. The test then checks through QMP that the
machine exists and is paused, and quits it through QMP.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness.preflight import find_binary, preflight
from harness.qemu_argv import machine_argv
from harness.qmp import SyncQMP
from harness.topology import load, preset_names


@pytest.mark.parametrize("preset", preset_names())
def test_qemu_starts_paused_with_preset(preset):
    argv = machine_argv(load(preset).topology, accel="tcg")
    binary = find_binary()
    preflight(argv, binary)
    with tempfile.TemporaryDirectory(prefix="nh-qmp-") as d:
        sock = Path(d) / "qmp.sock"
        proc = subprocess.Popen([binary, *argv, "-S", "-nodefaults", "-display", "none",
                                 "-qmp", f"unix:{sock},server=on,wait=off"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        qmp = SyncQMP(sock)
        try:
            deadline = time.monotonic() + 20
            while not sock.exists():
                if proc.poll() is not None:
                    pytest.fail(f"QEMU rejected {preset}: {proc.stderr.read().strip()}")
                assert time.monotonic() < deadline, "QEMU did not open its QMP socket within 20 s"
                time.sleep(0.05)
            qmp.connect(timeout=10)
            status = qmp.execute("query-status")
            assert status["status"] == "prelaunch" and status["running"] is False
            nodes = qmp.execute("query-memdev")
            total = sum(m["size"] for m in nodes if m["id"].startswith("hmem-node"))
            assert total == load(preset).topology.total_memory
            qmp.execute("quit")
            assert proc.wait(timeout=15) == 0
        finally:
            qmp.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
