"""SIGTERM and SIGHUP end a pytest session as Ctrl-C does, with exit status 128+N.

Without this, the library's own handler (:mod:`harness.vm.process`) turns SIGTERM into
``SystemExit`` wherever the main thread is: inside a test that is a failure with a traceback
through the SSH code, and the session goes on with the next test. Here the signal raises
:class:`Terminated`, a ``KeyboardInterrupt``: pytest stops the session where it is, the
plugin's session end shuts every VM down (or keeps it, with ``--keep-vm-on-failure``), and the
run exits 128+N (143 for SIGTERM) rather than pytest's 2 for Ctrl-C, so a caller can tell a
terminated run from an interrupted or failed one. A handler someone else installed is left alone.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The session got SIGTERM or SIGHUP; ``status`` is the exit status it ends with."""

    def __init__(self, signum: int) -> None:
        self.status = 128 + signum
        super().__init__(f"{signal.Signals(signum).name}: the numa-harness session stopped, "
                         f"its VMs shut down; exit status {self.status}")


class SessionSignals:
    """Installs the handlers for one session and remembers the signal that came."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def install(self) -> None:
        """Take SIGTERM/SIGHUP if nobody else did (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # a second signal while shutting down: let cleanup finish
            return
        self.received = signum
        raise Terminated(signum)

    def exit_status(self) -> int | None:
        """128+N once signal N came, else None."""
        return None if self.received is None else 128 + self.received

    def restore(self) -> None:
        """Put the handlers back as they were."""
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
