"""dmesg marks: a line the host has the guest write into its kernel log, and the log cut after it.

The guest side is ``files/lib.sh``'s ``kmsg_mark``, run by ``files/kmsg-mark.sh`` (:func:`mark_command`)
and by ``guest-state --mark`` (:func:`harness.guest.state.state_command`); both write
``numa-harness: TEXT``. Reading back is one ``dmesg`` and :func:`cut_after_mark`. Pure: command
lines in, text out; the caller runs them.
"""

from __future__ import annotations

import shlex

from .protocol import GUEST_PREFIX, KMSG_MARK


def mark_line(text: str) -> str:
    """The kernel log line a mark with ``text`` writes."""
    return f"{GUEST_PREFIX} {text}"


def mark_command(text: str) -> str:
    """The guest command line that writes the mark ``text`` into the kernel log."""
    if not text or "\n" in text:
        raise ValueError(f"a dmesg mark is one non-empty line, not {text!r}")
    return shlex.join([KMSG_MARK, text])


def cut_after_mark(dmesg: str, mark: str) -> str:
    """The lines of ``dmesg`` after the last one containing ``mark`` (all lines if none does)."""
    lines = dmesg.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if mark in lines[i]:
            return "\n".join(lines[i + 1:])
    return dmesg
