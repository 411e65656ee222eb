"""The node sampler (a guest shell file) run on the host against a fake sysfs, and its parser."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness.resources import guest_files_dir
from harness.stats.parse import StatsError
from harness.stats.timeline import Timeline, parse_samples, parse_started, start_command, stop_command

SAMPLER = guest_files_dir() / "node-sampler.sh"


def fake_node(root: Path, node: int, total: int, free: int) -> None:
    d = root / "devices" / "system" / "node" / f"node{node}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "meminfo").write_text(f"Node {node} MemTotal:       {total} kB\nNode {node} MemFree:        {free} kB\n"
                               f"Node {node} MemUsed:        {total - free} kB\nNode {node} Active:  1 kB\n")


@pytest.mark.parametrize("sh", ["busybox", "dash"])
def test_the_sampler_samples_every_node_until_stopped(sh, tmp_path):
    if shutil.which(sh) is None:
        pytest.skip(f"{sh} not installed")
    shell = ["busybox", "sh"] if sh == "busybox" else ["dash"]
    sampler = tmp_path / "node-sampler"  # it re-runs itself as $0: an executable with a shebang
    sampler.write_text(f"#!/usr/bin/env {' '.join(shell) if sh == 'dash' else 'sh'}\n" + SAMPLER.read_text())
    sampler.chmod(0o755)
    env = {**os.environ, "HARNESS_SYSFS": str(tmp_path)}
    fake_node(tmp_path, 0, 1000, 900)
    fake_node(tmp_path, 1, 2000, 2000)
    out = tmp_path / "samples"
    r = subprocess.run([*shell, str(sampler), "start", "0.1", "30", str(out)], capture_output=True, text=True,
                       env=env, timeout=10)
    pid = parse_started(r.stdout)
    time.sleep(0.5)
    fake_node(tmp_path, 1, 2000, 1500)  # node 1 fills while the "workload" runs
    time.sleep(0.4)
    r = subprocess.run([*shell, str(sampler), "stop", str(pid), str(out)], capture_output=True, text=True,
                       env=env, timeout=20)
    assert r.returncode == 0, r.stderr
    tl = Timeline("fill", parse_samples(r.stdout))
    assert tl.nodes() == [0, 1] and len(tl.used_kb(0)) >= 4
    assert tl.used_kb(1)[0][1] == 0 and tl.change_kb(1) == 500 and tl.peak_kb(1) == 500 and tl.change_kb(0) == 0
    times = [t for t, _ in tl.used_kb(0)]
    assert times == sorted(times) and times[0] == 0
    assert not out.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_commands_and_parsing():
    assert start_command(0.5, 600, "/tmp/x").endswith("node-sampler start 0.5 600 /tmp/x")
    assert stop_command(42, "/tmp/x").endswith("node-sampler stop 42 /tmp/x")
    assert parse_started("sampler pid=77\n") == 77
    with pytest.raises(StatsError):
        parse_started("sh: node-sampler: not found")
    with pytest.raises(StatsError):
        start_command(0, 10, "/tmp/x")
    assert parse_samples("junk\nsample t=1.50 node=2 total_kb=10 free_kb=4 used_kb=6\n")[0].used_kb == 6
