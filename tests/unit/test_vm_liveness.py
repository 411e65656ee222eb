"""Is that QEMU alive, and is it stopped? Checked against real processes (a stand-in whose
command line holds a path as QEMU's does, a SIGSTOPped child), never a mock of /proc."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from harness.errors import GuestFrozen
from harness.vm.commands import Liveness
from harness.vm.process import is_stopped, pid_alive, process_state, qemu_marker


def test_a_comma_in_a_state_path_is_matched_as_qemu_writes_it(tmp_path):
    """QEMU's command line carries the QMP socket path with its commas doubled; the liveness
    check must look for that form, else `harness down` calls a live VM 'already gone'."""
    from harness.vm.state import VMState

    sock = tmp_path / "a,b" / "qmp.sock"
    assert qemu_marker(sock) == str(sock).replace(",", ",,")
    # a stand-in process whose command line holds the path the way QEMU's does
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"path={qemu_marker(sock)}"])
    try:
        st = VMState(name="x", pid=p.pid, ssh_port=1, key="k", console_log="c", console_sock="s",
                     qmp_sock=str(sock), workdir=str(tmp_path), qemu_binary="q", started_at=0.0)
        for _ in range(250):  # until the child has exec'd (before, its command line is ours)
            if st.alive:
                break
            time.sleep(0.02)
        assert st.alive
        assert not pid_alive(p.pid, str(tmp_path / "other" / "qmp.sock"))
    finally:
        p.kill()
        p.wait()
    assert not st.alive


def test_a_stopped_qemu_is_named_by_liveness_without_asking_ssh_or_qmp(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_state(p.pid) in ("S", "R") and not is_stopped(p.pid)
        p.send_signal(signal.SIGSTOP)
        for _ in range(100):
            if is_stopped(p.pid):
                break
            time.sleep(0.02)
        assert is_stopped(p.pid) and pid_alive(p.pid)
        log = tmp_path / "console.log"
        live = Liveness(None, lambda: None, pid=p.pid, console_log=log, quiet=0.0)  # type: ignore[arg-type]
        exc = live.check()
        assert isinstance(exc, GuestFrozen)
        assert f"the QEMU process itself is stopped (pid {p.pid} in state T" in str(exc)
        assert f"kill -CONT {p.pid}" in (exc.hint or "") and str(log) in (exc.hint or "")
    finally:
        p.kill()
        p.wait()
    assert process_state(p.pid) is None and not is_stopped(p.pid)
