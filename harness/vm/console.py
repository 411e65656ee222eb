"""The guest's serial console: log tailing, milestone parsing, kernel problem detection.

Transport (why a QEMU chardev socket with ``logfile=``, not ``-serial stdio``)
------------------------------------------------------------------------------
QEMU's serial port is wired to::

    -chardev socket,id=hcon0,path=WORKDIR/console.sock,server=on,wait=off,logfile=WORKDIR/console.log
    -serial chardev:hcon0

* QEMU itself writes every byte the guest prints to ``console.log``, whether or
  not anybody is connected to the socket. A background VM (``harness up``) keeps
  logging after the process that started it has exited; nothing is lost while
  the harness is not attached; the file is the one source of truth for
  milestones and kernel problems, for a foreground VM and for one re-attached
  later alike (:class:`ConsoleMonitor` tails it).
* Nobody stays connected to the socket in normal operation. A connected reader
  that stops reading would make QEMU stall the guest's UART (QEMU applies back
  pressure on a connected socket); an unconnected socket just drops the bytes
  (after logging them).
* ``console.sock`` gives an interactive console on demand (:func:`interact`)
  and a way to type into the guest (:class:`ConsoleSocket`, a
  ``pexpect.fdpexpect`` session, e.g. for a ``poweroff -f`` when SSH is gone).
  ``-serial stdio`` would tie the console to the starting process's pty, which
  dies with it.

Pure functions (unit tested): :func:`classify_line`, :func:`find_kernel_problems`,
:func:`find_kernel_problem`, :func:`parse_milestone`, :func:`clean_line`.
"""

from __future__ import annotations

import os
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


# --------------------------------------------------------------------------
# Kernel problems
# --------------------------------------------------------------------------

PANIC = "panic"
OOPS = "oops"
BUG = "bug"
WARNING = "warning"
STALL = "stall"
TRACE = "call-trace"
CUT_HERE = "cut-here"

_SEVERITY = {CUT_HERE: 0, TRACE: 1, STALL: 2, WARNING: 2, BUG: 3, OOPS: 4, PANIC: 5}

#: (kind, pattern). Searched in order; the first match classifies the line.
#: Deliberately NOT matched (seen on clean boots, or not kernel bugs):
#: ``ACPI BIOS Error``/``ACPI Error`` (firmware tables, common under QEMU),
#: ``RETBleed: WARNING: ...``/other mitigation notices (no ``WARNING: CPU:``),
#: ``DEBUG:`` (``\bBUG:`` needs a word boundary), user space output.
_PROBLEM_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (PANIC, re.compile(r"Kernel panic - not syncing")),
    (OOPS, re.compile(r"\bOops: ")),
    (OOPS, re.compile(r"\bgeneral protection fault\b")),
    (BUG, re.compile(r"\bkernel BUG at ")),
    (BUG, re.compile(r"(?<![\w-])BUG: ")),
    (BUG, re.compile(r"\b(UBSAN|KASAN|KFENCE|KCSAN|KMSAN): ")),
    (WARNING, re.compile(r"\bWARNING: CPU: \d+")),
    (WARNING, re.compile(r"\bWARNING: (possible|suspicious|inconsistent|bad unlock)\b")),  # lockdep
    (STALL, re.compile(r"\bINFO: task \S+ blocked for more than \d+ seconds")),
    (STALL, re.compile(r"\brcu: INFO: \S+ (self-)?detected stalls?\b")),
    (CUT_HERE, re.compile(r"-+\[ cut here \]-+")),
    (TRACE, re.compile(r"\bCall Trace:")),
)
_END_TRACE = re.compile(r"-+\[ end trace [0-9a-f]+ \]-+|-+\[ end Kernel panic")

#: Lines quoted after the problem line in an excerpt.
EXCERPT_AFTER = 20
#: A marker (cut here / Call Trace) within this many lines of the previous
#: problem's first line belongs to that problem, not to a new one.
_MERGE_WINDOW = 60
#: Likewise a real problem line (a BUG followed by its Oops) within this many.
_MERGE_WINDOW_STRONG = 12


def classify_line(line: str) -> str | None:
    """The problem kind a console line starts (``panic``, ``oops``, ``bug`` ...), or None."""
    if GUEST_PREFIX in line:
        return None
    for kind, pattern in _PROBLEM_PATTERNS:
        if pattern.search(line):
            return kind
    return None


@dataclass(frozen=True)
class Problem:
    """A kernel problem seen on the console.

    ``line`` is the most telling line (``BUG: kernel NULL pointer dereference``
    rather than the ``cut here`` marker), ``start`` the index of the first line
    of the report, ``index`` the index of ``line``; ``excerpt`` is the report
    from ``start`` to ``EXCERPT_AFTER`` lines after ``line``.
    """

    kind: str
    line: str
    index: int
    start: int
    excerpt: str = ""

    @property
    def fatal(self) -> bool:
        """A panic stops the guest (``panic=-1`` + ``-no-reboot`` make QEMU exit)."""
        return self.kind == PANIC

    @property
    def message_line(self) -> str:
        """``line`` without the printk timestamp / caller prefix."""
        return _strip_printk_prefix(self.line)


_PRINTK_PREFIX = re.compile(r"^(<\d+>)?(\[\s*\d+\.\d+\])?(\[\s*[CT]\d+\])?\s*")


def _strip_printk_prefix(line: str) -> str:
    return _PRINTK_PREFIX.sub("", line, count=1)


class ProblemScanner:
    """Incremental problem finder: feed console lines one at a time.

    Lines of one report (``cut here``, ``WARNING: CPU:``, ``Call Trace:`` ...)
    become one :class:`Problem`; a panic always starts its own, so the panic
    line is never hidden behind the oops that caused it.
    """

    def __init__(self) -> None:
        self._found: list[Problem] = []
        self._open = False  # last problem's report still running (no "end trace" yet)

    def feed(self, index: int, line: str) -> None:
        """Look at console line number ``index``."""
        if _END_TRACE.search(line):
            self._open = False
            return
        kind = classify_line(line)
        if kind is None:
            return
        last = self._found[-1] if self._found else None
        if last is not None and kind != PANIC and self._belongs_to(last, index, kind):
            self._found[-1] = self._merge(last, index, line, kind)
            return
        self._found.append(Problem(kind=kind, line=line, index=index, start=index))
        self._open = True

    def _belongs_to(self, last: Problem, index: int, kind: str) -> bool:
        if not self._open:
            return False
        distance = index - last.start
        if last.kind == PANIC:  # the panic's own stack dump; nothing after a panic is news
            return distance <= _MERGE_WINDOW
        if _SEVERITY[kind] <= _SEVERITY[TRACE]:
            return distance <= _MERGE_WINDOW
        if _SEVERITY[last.kind] <= _SEVERITY[TRACE]:
            return distance <= 3  # "cut here" right before "WARNING: CPU:"
        return distance <= _MERGE_WINDOW_STRONG

    @staticmethod
    def _merge(last: Problem, index: int, line: str, kind: str) -> Problem:
        if _SEVERITY[last.kind] <= _SEVERITY[TRACE] < _SEVERITY[kind]:
            return Problem(kind=kind, line=line, index=index, start=last.start)
        if _SEVERITY[kind] > _SEVERITY[last.kind]:
            return Problem(kind=kind, line=last.line, index=last.index, start=last.start)
        return last

    def problems(self, lines: list[str]) -> list[Problem]:
        """The problems found so far, with excerpts cut from ``lines`` (all lines fed)."""
        return [with_excerpt(p, lines) for p in self._found]

    @property
    def count(self) -> int:
        """How many problems have been found so far."""
        return len(self._found)


def with_excerpt(problem: Problem, lines: list[str]) -> Problem:
    """``problem`` with its excerpt filled from ``lines``."""
    end = min(len(lines), problem.index + EXCERPT_AFTER + 1)
    text = "\n".join(lines[problem.start:end])
    return Problem(problem.kind, problem.line, problem.index, problem.start, text)


def find_kernel_problems(text: str) -> list[Problem]:
    """Every kernel problem in console ``text``, in order of appearance."""
    lines = [clean_line(raw) for raw in text.splitlines()]
    scanner = ProblemScanner()
    for i, line in enumerate(lines):
        scanner.feed(i, line)
    return scanner.problems(lines)


def most_severe(problems: Iterable[Problem]) -> Problem | None:
    """The first panic if any, else the first problem."""
    problems = list(problems)
    for p in problems:
        if p.kind == PANIC:
            return p
    return problems[0] if problems else None


def find_kernel_problem(text: str) -> Problem | None:
    """The kernel problem to report for console ``text`` (a panic wins), or None."""
    return most_severe(find_kernel_problems(text))


def describe_problems(problems: list[Problem]) -> tuple[str, str]:
    """(one-line message, multi-line detail) for a GuestPanic about ``problems``."""
    main = most_severe(problems)
    assert main is not None
    first = problems[0]
    message = f"guest kernel {main.kind}: {main.message_line}"
    if first is not main:
        message += f" (after {first.kind}: {first.message_line})"
    parts = [first.excerpt]
    if main is not first and main.start > first.index + EXCERPT_AFTER:
        parts += ["...", main.excerpt]
    if len(problems) > 1:
        parts.append(f"({len(problems)} kernel problem reports on the console in all)")
    return message, "\n".join(parts)


# --------------------------------------------------------------------------
# Following console.log
# --------------------------------------------------------------------------


@dataclass
class ConsoleState:
    """What the console has shown so far (a snapshot, see :meth:`ConsoleMonitor.snapshot`)."""

    lines: list[str] = field(default_factory=list)
    milestones: dict[str, float] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    guest_failures: list[str] = field(default_factory=list)


class ConsoleMonitor:
    """Follows ``console.log`` in a daemon thread; parses milestones and problems.

    Waiters block on :meth:`wait` with a timeout; the thread wakes them on every
    new line. ``on_line`` (optional) is called from the thread for each line.
    """

    POLL = 0.05

    def __init__(self, log: Path, *, on_milestone: Callable[[str], None] | None = None) -> None:
        self.log = log
        self._on_milestone = on_milestone
        self._lines: list[str] = []
        self._milestones: dict[str, float] = {}
        self._failures: list[str] = []
        self._scanner = ProblemScanner()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0
        self._partial = b""

    # -- thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start following the log (from its beginning)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"console:{self.log}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following; reads what is left in the file first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.poll()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.poll():
                self._stop.wait(self.POLL)

    def poll(self) -> bool:
        """Read new bytes from the log now. True if there were any."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return False
        if not data:
            return False
        with self._cond:
            self._offset += len(data)
            chunks = (self._partial + data).split(b"\n")
            self._partial = chunks.pop()
            new = [self._add_line(clean_line(c.decode("utf-8", "replace"))) for c in chunks]
            self._cond.notify_all()
        for milestone in new:
            if milestone and self._on_milestone:
                self._on_milestone(milestone)
        return True

    def _add_line(self, line: str) -> str | None:
        index = len(self._lines)
        self._lines.append(line)
        self._scanner.feed(index, line)
        if is_guest_failure(line):
            self._failures.append(line)
        milestone = parse_milestone(line)
        if milestone and milestone not in self._milestones:
            self._milestones[milestone] = time.monotonic()
            return milestone
        return None

    # -- queries -------------------------------------------------------------------

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` s until ``predicate()`` (called under the lock) holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def seen(self, milestone: str) -> bool:
        """Whether the console has shown ``milestone``."""
        with self._cond:
            return milestone in self._milestones

    @property
    def problem_count(self) -> int:
        """Number of kernel problems seen so far (cheap; for 'anything new?' checks)."""
        with self._cond:
            return self._scanner.count

    def problems(self, since: int = 0) -> list[Problem]:
        """Kernel problems seen so far (from the ``since``-th on), with excerpts."""
        with self._cond:
            return self._scanner.problems(self._lines)[since:]

    def tail(self, n: int = 30) -> str:
        """The last ``n`` console lines (plus an unterminated last line)."""
        with self._cond:
            lines = self._lines[-n:]
            if self._partial:
                lines = lines + [clean_line(self._partial.decode("utf-8", "replace"))]
            return "\n".join(lines[-n:])

    def guest_failures(self) -> list[str]:
        """``numa-harness:`` lines that reported a failure."""
        with self._cond:
            return list(self._failures)

    def snapshot(self) -> ConsoleState:
        """A copy of everything seen so far."""
        with self._cond:
            return ConsoleState(list(self._lines), dict(self._milestones),
                                self._scanner.problems(self._lines), list(self._failures))


# --------------------------------------------------------------------------
# Talking to the console socket
# --------------------------------------------------------------------------


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
