"""The guest's serial console: how its lines are read (milestones, guest messages).

Pure line parsing only. The rest of the console lives next door:

* :mod:`harness.vm.problems` finds kernel problems and OOM kills in console text (pure);
* :mod:`harness.vm.console_log` follows ``console.log`` in a thread (:class:`ConsoleMonitor`);
* :mod:`harness.vm.console_socket` types into the guest and connects a terminal.

Transport (why a QEMU chardev socket with ``logfile=``, not ``-serial stdio``)
------------------------------------------------------------------------------
QEMU's serial port is wired to (by :mod:`harness.qemu.bootargs`)::

    -chardev socket,id=hcon0,path=WORKDIR/console.sock,server=on,wait=off,logfile=WORKDIR/console.log
    -serial chardev:hcon0

QEMU itself writes every byte the guest prints to ``console.log``, whether or
not anybody is connected to the socket, so a background VM keeps logging after
the process that started it has exited and the file is the one source of truth
for milestones and kernel problems. Nobody stays connected to the socket in
normal operation: a connected reader that stops reading would make QEMU stall
the guest's UART; an unconnected socket just drops the bytes (after logging them).
"""

from __future__ import annotations

import re

from harness.guest.protocol import GUEST_PREFIX

# --------------------------------------------------------------------------
# Milestones
# --------------------------------------------------------------------------

QEMU_UP = "qemu-up"
KERNEL_STARTED = "kernel-started"
INIT_RUNNING = "init-running"
MODULES_LOADED = "modules-loaded"
NETWORK_UP = "network-up"
SSHD_READY = "sshd-ready"
SSH_READY = "ssh-ready"

#: Every milestone, in boot order. The first and the last are seen on the host
#: side (QMP answered, SSH logged in); the others are console lines.
MILESTONES = (QEMU_UP, KERNEL_STARTED, INIT_RUNNING, MODULES_LOADED, NETWORK_UP, SSHD_READY, SSH_READY)

_LINUX_VERSION = re.compile(r"\bLinux version \d+\.\d+")
# Keyword (after the prefix, case-insensitive) -> milestone. Matched by
# keyword so small wording changes in the guest's /init do not break boots.
_GUEST_KEYWORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\binit\s+(running|started)\b", re.I), INIT_RUNNING),
    (re.compile(r"\bmodules?\s+loaded\b", re.I), MODULES_LOADED),
    (re.compile(r"\bnetwork\s+(up|ready|configured)\b", re.I), NETWORK_UP),
    (re.compile(r"\bsshd?\s+(ready|listening|started|up)\b", re.I), SSHD_READY),
)
_GUEST_FAILURE = re.compile(r"\b(error|fail(ed|ure)?|cannot|can't|missing)\b", re.I)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def clean_line(raw: str) -> str:
    """A console line without carriage returns, ANSI escapes and trailing blanks."""
    return _ANSI.sub("", raw.replace("\r", "")).rstrip()


def guest_message(line: str) -> str | None:
    """The text after ``numa-harness:`` if ``line`` is a message from the guest's /init."""
    pos = line.find(GUEST_PREFIX)
    if pos < 0:
        return None
    return line[pos + len(GUEST_PREFIX):].strip()


def parse_milestone(line: str) -> str | None:
    """The console milestone ``line`` announces, or None.

    ``[    0.000000] Linux version 6.12...`` -> ``kernel-started``;
    ``numa-harness: init running`` -> ``init-running``; likewise
    ``modules loaded (N)``, ``network up ADDR``, ``sshd ready port 22``.
    """
    msg = guest_message(line)
    if msg is None:
        return KERNEL_STARTED if _LINUX_VERSION.search(line) else None
    for pattern, milestone in _GUEST_KEYWORDS:
        if pattern.search(msg):
            return milestone
    return None


def is_guest_failure(line: str) -> bool:
    """True for a ``numa-harness:`` line that reports a failure (quoted in boot errors)."""
    msg = guest_message(line)
    return msg is not None and bool(_GUEST_FAILURE.search(msg))
