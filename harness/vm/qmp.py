"""A small synchronous QMP client over the QEMU project's async ``qemu.qmp.QMPClient``.

``qemu.qmp.legacy.QEMUMonitorProtocol`` runs its event loop on the calling
thread, so it cannot be used from two threads (the VM's boot/shutdown path and
a signal or atexit handler). This wrapper runs one event loop in a daemon
thread and gives every call a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from harness.errors import QMPCommandError

T = TypeVar("T")


log = logging.getLogger(__name__)

class QMPFailure(Exception):
    """A QMP call failed or timed out (message says which)."""


class SyncQMP:
    """Connect to QEMU's QMP unix socket and run commands synchronously."""

    def __init__(self, socket_path: Path, *, name: str = "numa-harness") -> None:
        self.socket_path = socket_path
        self._client = QMPClient(name)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp:{name}", daemon=True)
        self._thread.start()
        self._connected = False

    def _call(self, coro: Awaitable[T], timeout: float, what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return future.result(timeout + 1)
        except (asyncio.TimeoutError, FutureTimeout) as e:
            future.cancel()
            raise QMPFailure(f"QMP {what} timed out after {timeout:g} s") from e
        except (QMPError, OSError, EOFError, asyncio.CancelledError) as e:
            raise QMPFailure(f"QMP {what} failed: {e or type(e).__name__}") from e

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and negotiate capabilities."""
        self._call(self._client.connect(str(self.socket_path)), timeout, "connect")
        self._connected = True

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 5.0) -> Any:
        """Run a QMP command, return its ``return`` value."""
        log.debug("QMP -> %s %s", command, arguments or "")
        result = self._call(self._client.execute(command, arguments), timeout, command)
        log.debug("QMP <- %s: %.500s", command, result)
        return result

    def close(self) -> None:
        """Disconnect and stop the event loop thread. Idempotent; never raises."""
        if self._loop.is_closed():
            return
        if self._connected:
            try:
                self._call(self._client.disconnect(), 2.0, "disconnect")
            except Exception:  # noqa: BLE001 - closing must not mask the error being handled
                pass
            self._connected = False
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()


def qmp_command(client: SyncQMP | None, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float = 30.0) -> Any:
    """Run ``command`` on a connected client and return QEMU's ``return`` value; a refused command,
    a timeout or no connection (``client`` None: QEMU is not running) is a QMPCommandError."""
    if client is None:
        raise QMPCommandError(f"QMP {command}: no monitor connection (QEMU is not running)")
    try:
        return client.execute(command, arguments, timeout=timeout)
    except QMPFailure as e:
        raise QMPCommandError(str(e)) from None


def qmp_once(socket_path: Path, command: str, arguments: dict[str, Any] | None = None, *,
             timeout: float = 30.0) -> Any:
    """Connect to the QMP socket at ``socket_path``, run one command, disconnect (a VM this process
    does not own, e.g. a background one). Errors as :func:`qmp_command`."""
    client = SyncQMP(socket_path)
    try:
        try:
            client.connect(timeout=min(timeout, 5.0))
        except QMPFailure as e:
            raise QMPCommandError(f"cannot reach QEMU's monitor at {socket_path}: {e}") from None
        return qmp_command(client, command, arguments, timeout=timeout)
    finally:
        client.close()
