"""Talking to the guest's serial console socket (``console.sock``).

* :class:`ConsoleSocket`: a short-lived ``pexpect.fdpexpect`` session to type
  into the guest (e.g. a ``poweroff -f`` when SSH is gone);
* :func:`interact`: the user's terminal on the console until Ctrl-].

``-serial stdio`` would tie the console to the starting process's pty, which
dies with it; the socket can be reached from any later process.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from collections.abc import Callable
from pathlib import Path


def connect_console(sock_path: Path, timeout: float = 5.0) -> socket.socket:
    """Connect to QEMU's console chardev socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock_path))
    s.settimeout(None)
    return s


class ConsoleSocket:
    """A short-lived connection to the console for typing into the guest (pexpect).

    Keep it open only briefly: while connected, the guest's console output
    must be read (``expect``) or QEMU stalls the guest's UART.
    """

    def __init__(self, sock_path: Path, timeout: float = 5.0) -> None:
        from pexpect import fdpexpect

        self._sock = connect_console(sock_path, timeout)
        self.child = fdpexpect.fdspawn(self._sock.fileno(), timeout=timeout, encoding="utf-8",
                                       codec_errors="replace")

    def sendline(self, text: str) -> None:
        """Type ``text`` and Enter."""
        self.child.sendline(text)

    def expect(self, pattern: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for regex ``pattern``; False on timeout or EOF."""
        import pexpect

        try:
            return self.child.expect([pattern, pexpect.EOF, pexpect.TIMEOUT], timeout=timeout) == 0
        except OSError:
            return False

    def close(self) -> None:
        """Disconnect (the guest's console keeps being logged by QEMU)."""
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ESCAPE_CHAR = b"\x1d"  # Ctrl-]


def interact(sock_path: Path, *, stdin: int | None = None, stdout: int | None = None,
             alive: Callable[[], bool] = lambda: True) -> None:
    """Connect the user's terminal to the guest console until Ctrl-] (or the VM stops).

    A raw-mode select loop (``pexpect.fdpexpect`` has no ``interact``); the
    terminal mode is restored on every exit path.
    """
    import termios
    import tty

    in_fd = sys.stdin.fileno() if stdin is None else stdin
    out_fd = sys.stdout.fileno() if stdout is None else stdout
    sock = connect_console(sock_path)
    saved = termios.tcgetattr(in_fd) if os.isatty(in_fd) else None
    try:
        if saved is not None:
            tty.setraw(in_fd)
        _pump(sock, in_fd, out_fd, alive)
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        sock.close()


def _pump(sock: socket.socket, in_fd: int, out_fd: int, alive: Callable[[], bool]) -> None:
    while alive():
        ready, _, _ = select.select([sock, in_fd], [], [], 0.5)  # type: ignore[type-var]
        if sock in ready:
            data = sock.recv(4096)
            if not data:
                return
            os.write(out_fd, data)
        if in_fd in ready:
            data = os.read(in_fd, 1024)
            if not data or ESCAPE_CHAR in data:
                before = data.split(ESCAPE_CHAR, 1)[0]
                if before:
                    sock.sendall(before)
                return
            sock.sendall(data)
