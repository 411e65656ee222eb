"""The guest's serial console: how its lines are read (milestones, guest messages).

Pure line parsing only.

Garbled lines
-------------
The kernel writes a console record in one go, but the guest's own lines go out through the
tty a few bytes at a time, so a kernel record can land inside one of them::

    numa-harness: in[    1.998473] tsc: Refined TSC clocksource calibration: 2793.436 MHz
    it running

:class:`GuestLineJoiner` puts such a line back together (the text before a kernel time stamp
is held until the rest of the line comes, on the next console line that is not the kernel's),
milestones are looked for anywhere in a line, and a later milestone implies every earlier one
(:func:`implied_milestones`): the guest's /init prints them in one order, so ``sshd ready``
proves ``init running`` even when that line was lost. Milestones stay on the kernel's console
rather than a channel of their own (a second serial port, virtio-console): the console is the
one log a user reads, and a kernel of the user's own need not have the second port's driver. The rest of the console lives next door:

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
#: The time stamp that starts a kernel console record (``[    1.998473] ``).
_KERNEL_STAMP = re.compile(r"\[\s*\d+\.\d+\]")
#: Kernel records a split guest line is waited through before its start is given up.
MAX_INTERLEAVED = 64
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


def implied_milestones(milestone: str) -> tuple[str, ...]:
    """The console milestones ``milestone`` proves were passed, earliest first, itself last.

    The guest prints its milestones in one order (:data:`MILESTONES`), so ``sshd-ready`` means
    the kernel started, /init ran, the modules loaded and the network came up, even if the
    console garbled those lines. Host-side milestones (``qemu-up``, ``ssh-ready``) imply nothing.
    """
    if milestone not in MILESTONES[1:-1]:
        return (milestone,)
    return MILESTONES[1:MILESTONES.index(milestone) + 1]


class GuestLineJoiner:
    """Puts guest lines split by kernel records back together (one console's lines, in order).

    :meth:`feed` takes each cleaned console line and returns the guest lines it completes:
    a line with no kernel time stamp as it is; for a line cut by a kernel record
    (``numa-harness: in[    1.99] tsc: ...``) nothing yet, and the joined line
    (``numa-harness: init running``) once its rest arrives on the next line that does not
    start with a time stamp. Kernel records themselves are not returned.
    """

    def __init__(self) -> None:
        self._pending: str | None = None
        self._waited = 0

    def feed(self, line: str) -> list[str]:
        """The guest lines ``line`` completes (none, one, or a held start joined with it)."""
        stamp = _KERNEL_STAMP.search(line)
        own = line if stamp is None else line[:stamp.start()]
        if self._pending is not None:
            if stamp is not None and not own:  # one more whole kernel record inside the guest line
                self._waited += 1
                if self._waited > MAX_INTERLEAVED:
                    held, self._pending = self._pending, None
                    return [held]
                return []
            if GUEST_PREFIX in own:  # a line of its own (another writer): the held start stays a fragment
                held, self._pending = self._pending, None
                return [held, *self.feed(line)]
            joined = self._pending + own
            if stamp is not None:  # cut again
                self._pending = joined
                return []
            self._pending = None
            return [joined]
        if stamp is None:
            return [line]
        if own.strip():
            self._pending, self._waited = own, 0
        return []


def guest_lines(console: str) -> list[str]:
    """The guest's own lines in console text, split lines joined (:class:`GuestLineJoiner`)."""
    joiner = GuestLineJoiner()
    return [g for raw in console.splitlines() for g in joiner.feed(clean_line(raw))]


def line_milestones(line: str, joined: list[str]) -> list[str]:
    """The milestones a console ``line`` and the guest lines it completed (``joined``) announce,
    with every milestone they imply, in boot order."""
    found = {m for m in (parse_milestone(x) for x in (line, *joined)) if m}
    return [m for m in MILESTONES if any(m in implied_milestones(f) for f in found)]


def milestones_in(console: str) -> list[str]:
    """Every milestone console text proves, in boot order (garbled lines and implication included)."""
    joiner = GuestLineJoiner()
    seen: set[str] = set()
    for raw in console.splitlines():
        line = clean_line(raw)
        seen.update(line_milestones(line, joiner.feed(line)))
    return [m for m in MILESTONES if m in seen]
