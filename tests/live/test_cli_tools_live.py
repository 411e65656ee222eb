"""The composable commands against real guests: ssh-config with the system's ssh and scp,
qmp on a kept VM, and the command line qemu-cmd --full prints, booted by hand."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from qemu_procs import qemus_with_env

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

HARNESS = [sys.executable, "-m", "harness.cli"]
TAG = f"NUMA_HARNESS_TEST_TAG={uuid.uuid4().hex}"


def harness(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    key, value = TAG.split("=")
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, key: value, **(env or {})})


@pytest.fixture
def kept_vm(tmp_path: Path):
    """A VM kept by ``harness up`` (numa-basic, TCG), always brought down."""
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.skip("OpenSSH client not installed (apt-get install openssh-client)")
    name = f"cli-tools-{uuid.uuid4().hex[:8]}"
    env = {"NUMA_HARNESS_STATE": str(tmp_path / "vms")}
    r = harness("up", "numa-basic", "--name", name, "--accel", "tcg", env=env)
    try:
        assert r.returncode == 0, r.stderr
        yield name, env
    finally:
        harness("down", name, env=env)
        assert qemus_with_env(TAG) == []


def test_ssh_config_works_with_ssh_and_scp_and_qmp_answers(kept_vm, tmp_path: Path):
    name, env = kept_vm
    r = harness("ssh-config", name, env=env)
    assert r.returncode == 0, r.stderr
    assert "StrictHostKeyChecking yes" in r.stdout, "the guest's host key should be known and checked"
    cfg = tmp_path / "ssh_config"
    cfg.write_text(r.stdout)
    ssh = subprocess.run(["ssh", "-F", str(cfg), name, "cat /sys/devices/system/node/online"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == "0-1"  # numa-basic's two nodes, as the guest kernel reports them
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(4096))
    scp = subprocess.run(["scp", "-F", str(cfg), "-q", str(payload), f"{name}:/tmp/payload"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert scp.returncode == 0, scp.stderr
    back = tmp_path / "back"
    scp = subprocess.run(["scp", "-F", str(cfg), "-q", f"{name}:/tmp/payload", str(back)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert scp.returncode == 0, scp.stderr
    assert back.read_bytes() == payload.read_bytes()

    r = harness("qmp", name, "query-status", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"status": "running", "running": True}
    r = harness("qmp", name, "query-cpus-fast", env=env)
    assert r.returncode == 0, r.stderr
    cpus = json.loads(r.stdout)
    assert sorted(c["cpu-index"] for c in cpus) == [0, 1]
    assert sorted(c["props"]["node-id"] for c in cpus) == [0, 1]  # one vCPU per node in numa-basic
    r = harness("qmp", name, "no-such-command", env=env)
    assert r.returncode == 125 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, r.stderr
    r = harness("qmp", name, "query-status", "{not json", env=env)
    assert r.returncode == 125 and "not JSON" in r.stderr


def test_full_qemu_command_line_boots_by_hand(tmp_path: Path):
    """What qemu-cmd --full prints is what a boot runs: started here with subprocess, the guest
    reaches its init and its sshd answers with the key the command line carries."""
    if shutil.which("ssh") is None:
        pytest.skip("OpenSSH client not installed (apt-get install openssh-client)")
    work = tmp_path / "w"
    r = harness("qemu-cmd", "numa-basic", "--full", "--json", "--accel", "tcg", "--workdir", str(work),
                "--qemu-arg=-msg", "--qemu-arg=timestamp=on")
    assert r.returncode == 0, r.stderr
    argv = json.loads(r.stdout)
    assert "-kernel" in argv and "-initrd" in argv and "-append" in argv and "-S" not in argv
    append = argv[argv.index("-append") + 1]
    assert "harness.sshkey=" in append and "console=ttyS0" in append
    assert argv[-2:] == ["-msg", "timestamp=on"]  # --qemu-arg, passed through
    port = int(next(a for a in argv if "hostfwd=" in a).split("hostfwd=tcp:127.0.0.1:")[1].split("-")[0])
    key, value = TAG.split("=")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, key: value}, start_new_session=True)
    try:
        console = work / "console.log"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if console.is_file() and "numa-harness: init running" in console.read_text(errors="replace"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert "numa-harness: init running" in console.read_text(errors="replace"), console.read_text()[-2000:]
        ok = None
        while time.monotonic() < deadline:
            ok = subprocess.run(["ssh", "-i", str(work / "id_ed25519"), "-p", str(port), "-o", "BatchMode=yes",
                                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                 "-o", "ConnectTimeout=10", "root@127.0.0.1", "cat /proc/cmdline"],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if ok.returncode == 0:
                break
            time.sleep(2)
        assert ok is not None and ok.returncode == 0, ok.stderr if ok else "no attempt"
        assert "harness.sshkey=" in ok.stdout  # the guest booted the printed command line
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert qemus_with_env(TAG) == []
