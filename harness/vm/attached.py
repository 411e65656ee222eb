"""A background VM this process did not start, found by its state directory (``harness ssh``,
``harness stats``, ``harness down`` via :mod:`harness.cli.vms`).

:class:`AttachedVM` reads ``vm.json`` (:mod:`harness.vm.state`), checks that its QEMU still
runs, follows its console log and logs in over SSH; everything it then does with the guest is
:class:`~harness.vm.link.GuestLink`'s. QEMU is known by its PID, verified by the QMP socket
path on its command line, never by a process handle: :meth:`AttachedVM.close` lets go and
leaves it running, :meth:`~harness.vm.link.GuestLink.shutdown` stops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import GuestCommandError, VMStateError
from harness.vm import process
from harness.vm.keys import load_keypair
from harness.vm.link import GuestLink, Lifecycle
from harness.vm.qmp import QMPFailure, SyncQMP
from harness.vm.ssh import GuestSSH
from harness.vm.state import STATE_FILE, VMState, read_state

#: The shutdown budget of a VM whose boot timeouts are not known here.
SHUTDOWN_BUDGET = 30.0


class AttachedVM(GuestLink):
    """A running background VM, reconnected to; :meth:`attach` makes one."""

    def __init__(self, state_dir: Path, record: VMState, *,
                 on_milestone: Callable[[str], None] | None = None) -> None:
        super().__init__(Path(record.workdir), Lifecycle.ATTACHED, name=record.name, qemu_binary=record.qemu_binary,
                         shutdown_budget=SHUTDOWN_BUDGET, on_milestone=on_milestone)
        self.ssh_port, self.pid, self.boot_seconds = record.ssh_port, record.pid, record.boot_seconds
        self._key = load_keypair(Path(record.key))
        self._started_at = time.monotonic() - (time.time() - record.started_at)
        self._state_file = state_dir / STATE_FILE
        self._follow_console()

    @classmethod
    def attach(cls, state_dir: Path, *, ssh_timeout: float = 15.0,
               on_milestone: Callable[[str], None] | None = None) -> AttachedVM:
        """Reconnect to a background VM from ``state_dir/vm.json`` (SSH, QMP, console log).

        VMStateError if there is none or its QEMU is gone (the state is kept, so
        ``harness down`` can clean it up).
        """
        st = read_state(state_dir)
        if not st.alive:
            raise VMStateError(f"the VM of {state_dir} is no longer running (QEMU pid {st.pid} is gone)",
                               hint=f"`harness down {st.name or state_dir.name}` removes it; "
                                    f"console log: {st.console_log}")
        vm = cls(state_dir, st, on_milestone=on_milestone)
        try:
            vm._connect(ssh_timeout)
        except BaseException:
            vm.close()
            raise
        return vm

    def _connect(self, ssh_timeout: float) -> None:
        assert self._key is not None
        qmp = SyncQMP(self._files.qmp_sock)
        try:
            qmp.connect(timeout=3)
            self._qmp = qmp
        except QMPFailure:
            qmp.close()  # still usable over SSH; shutdown falls back to SIGKILL
        self._ssh = GuestSSH(self.ssh_port, self._key)
        try:
            self._ssh.connect(time.monotonic() + ssh_timeout, self._abort_reason)
        except GuestCommandError as e:
            raise GuestCommandError(f"cannot log in to the VM on 127.0.0.1:{self.ssh_port}",
                                    detail=e.detail) from e

    # -- the QEMU process, by verified PID ---------------------------------------------

    def _qemu_alive(self) -> bool:
        return process.pid_alive(self.pid, process.qemu_marker(self._files.qmp_sock))

    def _wait_exit(self, timeout: float) -> bool:
        return process.wait_gone(self.pid, process.qemu_marker(self._files.qmp_sock), timeout)

    def kill_now(self) -> None:
        """SIGKILL QEMU, if it is still the process of this VM, and wait for it to go."""
        if self.pid:
            process.kill_verified(self.pid, process.qemu_marker(self._files.qmp_sock))

    # -- end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of the VM and leave it running (nothing to do once it is stopped)."""
        if self.lifecycle is Lifecycle.ATTACHED:
            self._detach()

    def __enter__(self) -> AttachedVM:
        return self
