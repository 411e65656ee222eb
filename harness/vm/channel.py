"""The command channel: one long-lived SSH exec channel per VM that runs guest commands.

A command over a fresh SSH exec channel costs a channel set-up, a dropbear fork and a login
shell; here one exec channel runs the guest program ``cmdchan`` (``harness/guest/programs/
cmdchan.c``) for the life of the connection, and each command is a framed request on it and a
framed reply back:

    start:    ``NHCHAN 1\\n``
    request:  ``C SEQ CMDLEN STDINLEN TIMEOUT_MS\\n`` CMD STDIN
    reply:    ``R SEQ STATUS SIGNAL OUTLEN ERRLEN FLAG\\n`` STDOUT STDERR

The guest runs each command as ``/bin/sh -c CMD`` in its own session with its own stdin,
stdout and stderr, and kills that session with SIGKILL when it outlives its timeout (FLAG
``t``); the channel stays usable. The framing (:func:`encode_request`, :class:`ReplyParser`)
is pure; :class:`CommandChannel` drives it over paramiko. :class:`~harness.vm.ssh.GuestSSH`
decides when to use it and falls back to an exec channel per command (streamed output, stdin
from a file or larger than :data:`MAX_STDIN`, a channel that will not start).

Knows nothing of QEMU, the console or pytest.
"""

from __future__ import annotations

import select
import signal as _signal
import threading
import time
from dataclasses import dataclass

from harness.errors import GuestCommandError, HarnessError
from harness.guest.protocol import GUEST_TESTS_DIR

#: The guest program at the far end.
AGENT = f"{GUEST_TESTS_DIR}/cmdchan"
BANNER = b"NHCHAN 1\n"
#: Larger stdin goes over an exec channel of its own (streamed, never held twice in memory).
MAX_STDIN = 1 << 20
#: Seconds the guest's kill of a timed-out command and its reply may take beyond the timeout.
KILL_GRACE = 10.0
MAX_HEADER = 256


class ChannelError(HarnessError):
    """The command channel broke (bad framing, lost channel); the caller falls back or reconnects."""


@dataclass(frozen=True)
class Reply:
    """One framed reply: the command's exit status (128+N for signal N), output and whether it timed out."""

    seq: int
    status: int
    signal: int
    stdout: bytes
    stderr: bytes
    timed_out: bool

    @property
    def signal_name(self) -> str | None:
        """``KILL`` for signal 9, ... (None when the command exited)."""
        if not self.signal:
            return None
        try:
            return _signal.Signals(self.signal).name.removeprefix("SIG")
        except ValueError:
            return str(self.signal)


def encode_request(seq: int, command: str, stdin: bytes = b"", timeout: float | None = None) -> bytes:
    """The request frame for ``command`` (pure). ``timeout`` None or 0: no limit in the guest."""
    cmd = command.encode()
    ms = 0 if not timeout else max(1, int(timeout * 1000))
    return b"C %d %d %d %d\n" % (seq, len(cmd), len(stdin), ms) + cmd + stdin


def parse_reply_header(line: bytes) -> tuple[int, int, int, int, int, bool]:
    """``R SEQ STATUS SIGNAL OUTLEN ERRLEN FLAG`` -> its fields (pure); ChannelError if malformed."""
    parts = line.split()
    if len(parts) != 7 or parts[0] != b"R" or parts[6] not in (b"t", b"-"):
        raise ChannelError(f"malformed reply header from the guest: {line[:80]!r}")
    try:
        seq, status, sig, outlen, errlen = (int(p) for p in parts[1:6])
    except ValueError:
        raise ChannelError(f"malformed reply header from the guest: {line[:80]!r}") from None
    if min(seq, status, sig, outlen, errlen) < 0:
        raise ChannelError(f"malformed reply header from the guest: {line[:80]!r}")
    return seq, status, sig, outlen, errlen, parts[6] == b"t"


class ReplyParser:
    """Incremental parser of the reply stream (pure): :meth:`feed` bytes, get complete replies.

    The stream starts with the banner, which :meth:`feed` checks before the first reply.
    """

    def __init__(self, *, banner: bool = True) -> None:
        self._buf = bytearray()
        self._want_banner = banner
        self._header: tuple[int, int, int, int, int, bool] | None = None

    @property
    def started(self) -> bool:
        """Whether the banner came (the guest program runs)."""
        return not self._want_banner

    def feed(self, data: bytes) -> list[Reply]:
        """Add ``data``; return every reply completed by it. ChannelError on a malformed stream."""
        self._buf += data
        replies: list[Reply] = []
        while True:
            if self._want_banner:
                if len(self._buf) < len(BANNER):
                    if not BANNER.startswith(bytes(self._buf)):
                        raise ChannelError(f"the guest's command channel did not start: {bytes(self._buf)[:80]!r}")
                    return replies
                if not self._buf.startswith(BANNER):
                    raise ChannelError(f"the guest's command channel did not start: {bytes(self._buf)[:80]!r}")
                del self._buf[:len(BANNER)]
                self._want_banner = False
            if self._header is None:
                end = self._buf.find(b"\n")
                if end < 0:
                    if len(self._buf) > MAX_HEADER:
                        raise ChannelError("reply header from the guest too long")
                    return replies
                self._header = parse_reply_header(bytes(self._buf[:end]))
                del self._buf[:end + 1]
            seq, status, sig, outlen, errlen, timed_out = self._header
            if len(self._buf) < outlen + errlen:
                return replies
            out = bytes(self._buf[:outlen])
            err = bytes(self._buf[outlen:outlen + errlen])
            del self._buf[:outlen + errlen]
            self._header = None
            replies.append(Reply(seq, status, sig, out, err, timed_out))


class CommandChannel:
    """The guest end of one running ``cmdchan`` over an open paramiko transport.

    :meth:`run` sends one request and waits for its reply; one command at a time (a second
    thread gets ``None`` from :meth:`try_run` and takes the exec path). A timed-out command is
    killed in the guest and reported; a broken channel raises ChannelError and is closed
    (the owner opens a new one next time).
    """

    def __init__(self, transport: object, *, start_timeout: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._parser = ReplyParser()
        self.broken = False
        try:
            self._chan = transport.open_session(timeout=start_timeout)  # type: ignore[attr-defined]
            self._chan.exec_command(AGENT)
        except Exception as e:  # noqa: BLE001 - paramiko raises several kinds; all mean "no channel"
            raise ChannelError(f"could not open the command channel: {e}") from e
        deadline = time.monotonic() + start_timeout
        while not self._parser.started:
            self._read(deadline, what="the command channel's start")

    def _read(self, deadline: float, *, what: str, abort: object = None) -> list[Reply]:
        chan = self._chan
        while True:
            if chan.recv_ready():
                data = chan.recv(1 << 20)
                if not data:
                    self._break()
                    raise ChannelError(f"the guest closed the command channel during {what}")
                return self._parser.feed(data)
            if chan.closed or chan.exit_status_ready() or chan.eof_received:
                err = chan.recv_stderr(4096) if chan.recv_stderr_ready() else b""
                self._break()
                raise ChannelError(f"the command channel ended during {what}"
                                   + (f": {err.decode(errors='replace').strip()}" if err else ""))
            if callable(abort):
                exc = abort()
                if exc is not None:
                    self._break()
                    raise exc
            left = deadline - time.monotonic()
            if left <= 0:
                self._break()
                raise ChannelError(f"no answer on the command channel within the time limit ({what})")
            select.select([chan], [], [], min(0.2, left))

    def try_run(self, command: str, *, timeout: float, stdin: bytes = b"", abort: object = None) -> Reply | None:
        """:meth:`run`, or None at once if another thread is using the channel."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._run(command, timeout, stdin, abort)
        finally:
            self._lock.release()

    def _run(self, command: str, timeout: float, stdin: bytes, abort: object) -> Reply:
        if self.broken:
            raise ChannelError("the command channel is closed")
        self._seq += 1
        seq = self._seq
        try:
            self._chan.sendall(encode_request(seq, command, stdin, timeout))
        except Exception as e:  # noqa: BLE001
            self._break()
            raise ChannelError(f"could not send to the command channel: {e}") from e
        deadline = time.monotonic() + timeout + KILL_GRACE
        while True:
            for reply in self._read(deadline, what=f"{command!r}", abort=abort):
                if reply.seq != seq:
                    self._break()
                    raise ChannelError(f"reply {reply.seq} on the command channel, expected {seq}")
                return reply

    def _break(self) -> None:
        self.broken = True
        try:
            self._chan.close()
        except Exception:  # noqa: BLE001 - closing a broken channel must not raise
            pass

    def close(self) -> None:
        """Close the channel (the guest program sees EOF and exits). Idempotent."""
        self._break()


def timed_out_error(command: str, timeout: float, reply: Reply) -> GuestCommandError:
    """The error for a command the guest killed at its timeout (same words as the exec path's)."""
    tail = "\n".join(p for p in (reply.stdout.decode(errors="replace")[-2000:],
                                 reply.stderr.decode(errors="replace")[-2000:]) if p)
    return GuestCommandError(f"guest command timed out after {timeout:g} s: {command}",
                             hint="pass a longer timeout", detail=tail or "(no output)")
