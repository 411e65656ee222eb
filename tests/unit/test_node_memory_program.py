"""``files/node-memory.sh``'s ``movable`` step run on the host (busybox and dash) against a fake sysfs."""

from __future__ import annotations

import os
import shlex
import subprocess

from harness.guest import node_memory as nm
from harness.resources import guest_files_dir

PROGRAM = guest_files_dir() / "node-memory.sh"


def test_movable_onlines_what_goes_offline_and_counts_the_rest(guest_sh, tmp_path):
    node = tmp_path / "sys/devices/system/node/node1"
    for i, state in ((8, "online"), (9, "online"), (10, None)):
        (node / f"memory{i}").mkdir(parents=True)
        if state:
            (node / f"memory{i}/state").write_text(state + "\n")
        else:
            (node / f"memory{i}/state").mkdir()   # a block that will not go offline
    argv = shlex.split(nm.movable(1))
    assert argv[0] == nm.NODE_MEMORY
    r = subprocess.run([*guest_sh, str(PROGRAM), *argv[1:]], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "HARNESS_SYSFS": str(tmp_path / "sys")})
    assert nm.parse_movable(r.stdout) == (2, 1), r.stdout + r.stderr
    assert (node / "memory8/state").read_text() == "online_movable\n"
