"""Loopback TCP ports for the guest's SSH forward (127.0.0.1 only, never another address)."""

from __future__ import annotations

import re
import socket

LOOPBACK = "127.0.0.1"

_HOSTFWD_FAILED = re.compile(r"Could not set up host forwarding rule '[^']*:(\d+)-:")


def pick_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel's choice).

    Another process may take it before QEMU binds it; the caller retries on a
    hostfwd bind error (:func:`hostfwd_bind_failed`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether QEMU could bind 127.0.0.1:``port`` now (same SO_REUSEADDR as slirp)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def hostfwd_bind_failed(qemu_stderr: str) -> int | None:
    """The port from QEMU's "Could not set up host forwarding rule" error, else None."""
    m = _HOSTFWD_FAILED.search(qemu_stderr)
    return int(m.group(1)) if m else None
