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

from harness.qemu.argv import machine_argv
from harness.qemu.preflight import find_binary, preflight
from harness.topology import load, preset_names
from harness.vm.qmp import SyncQMP


@pytest.mark.parametrize("preset", preset_names())
def test_qemu_starts_paused_with_preset(preset):
    from harness.boot.prepare import make_backing_dirs

    t = load(preset).topology
    with tempfile.TemporaryDirectory(prefix="nh-qmp-") as d:
        make_backing_dirs(t, Path(d))  # file-backed presets keep their files under the backing directory
        argv = machine_argv(t, accel="tcg", files_dir=d)
        binary = find_binary()
        preflight(argv, binary)
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


TWO_WINDOWS = """
description: two host bridges, a window each plus an interleaved one, a switch, a generic port, a memory-side cache
machine: {smp: 2}
nodes:
  - {id: 0, cpus: 0-1, memory: 1G}
  - {id: 1, memory: 0, initiator: 0}
cxl:
  host_bridges:
    - {id: cxl.1, bus_nr: 12, root_ports: [{id: rp0}, {id: rp1}]}
    - {id: cxl.2, bus_nr: 40, root_ports: [{id: rp2}]}
  switches:
    - {id: us0, upstream: rp1, downstream_ports: [{id: dsp0}]}
  devices:
    - {id: m0, port: rp0, volatile: 256M}
    - {id: m1, port: rp2, volatile: 256M}
    - {id: m2, port: dsp0, persistent: 256M, lsa: 1M}
  windows:
    - {targets: [cxl.1], size: 4G}
    - {targets: [cxl.2], size: 4G, granularity: 4K}
    - {targets: [cxl.1, cxl.2], size: 8G}
  generic_ports:
    - {id: gp0, host_bridge: cxl.1, node: 1}
hmat:
  links:
    - {initiator: 0, target: 0, latency: 80, bandwidth: 20G}
    - {initiator: 0, target: 1, latency: 200, bandwidth: 10G}
  caches:
    - {node: 0, size: 8M, level: 1, associativity: direct, policy: write-back, line: 64}
"""


def test_qemu_accepts_several_windows_switch_and_generic_port(tmp_path):
    """Beyond the presets: several fixed windows, a switch, pmem and a generic port together."""
    from harness.topology import parse

    argv = machine_argv(parse(TWO_WINDOWS, "inline.yaml"), accel="tcg")
    binary = find_binary()
    preflight(argv, binary)
    p = subprocess.run([binary, *argv, "-S", "-nodefaults", "-display", "none", "-qmp", "stdio"],
                       input='{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n{"execute":"quit"}\n',
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert '"status": "prelaunch"' in p.stdout


def _qmp_session(binary: str, argv: list[str], commands: list[str]) -> subprocess.CompletedProcess:
    lines = ['{"execute":"qmp_capabilities"}'] + [f'{{"execute":"{c}"}}' for c in commands] + ['{"execute":"quit"}']
    return subprocess.run([binary, *argv, "-S", "-nodefaults", "-display", "none", "-qmp", "stdio"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)


def test_q35_cpu_table_matches_installed_qemu():
    """harness.qemu.limits' q35 vCPU table agrees with the installed QEMU's query-machines."""
    import json

    from harness.qemu.limits import q35_max_cpus
    from harness.qemu.preflight import capabilities

    binary = find_binary()
    p = _qmp_session(binary, ["-machine", "none"], ["query-machines"])
    machines = next(json.loads(ln)["return"] for ln in p.stdout.splitlines() if '"cpu-max"' in ln)
    q35 = next(m for m in machines if m.get("alias") == "q35")
    assert q35_max_cpus(capabilities(binary).version) == q35["cpu-max"]


def test_comma_in_backing_path_reaches_qemu_as_one_path(tmp_path):
    """A comma in a path is doubled for QEMU's option syntax: the file QEMU creates has the comma."""
    from harness.topology import parse

    d = tmp_path / "a,share=off"
    d.mkdir()
    t = parse(f"description: x\nnodes:\n  - {{id: 0, cpus: 0-1, memory: 256M, backend: file, share: true, path: '{d}/node0'}}\n",
              "comma.yaml")
    argv = machine_argv(t, accel="tcg")
    assert f"mem-path={str(d).replace(',', ',,')}/node0" in " ".join(argv)
    p = _qmp_session(find_binary(), argv, ["query-status"])
    assert p.returncode == 0, p.stderr
    assert (d / "node0").is_file()


def test_qemu_runs_tcg_single_threaded():
    from harness.topology import parse

    t = parse("description: x\nmachine: {smp: 4}\nnodes:\n  - {id: 0, cpus: 0-3, memory: 256M}\n", "t.yaml")
    p = _qmp_session(find_binary(), machine_argv(t, accel="tcg", tcg_thread="single"), ["query-status"])
    assert p.returncode == 0, p.stderr
