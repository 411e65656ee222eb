"""SSH into the guest with paramiko: connect with retry, commands, a shell.

The guest is ephemeral (a fresh initramfs each boot), so its host key is
accepted without being stored anywhere (``AutoAddPolicy`` on an empty,
never-saved host key set). Each VM logs in with its own ed25519 key pair
(:mod:`harness.vm.keys`).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal as _signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from harness.errors import GuestCommandError
from harness.vm.channel import MAX_STDIN, ChannelError, CommandChannel, timed_out_error
from harness.vm.keys import KeyPair

log = logging.getLogger(__name__)

GUEST_USER = "root"

# paramiko logs every failed attempt at ERROR; with no handler configured
# Python's last-resort handler would print them while we retry on purpose.
if not logging.getLogger("paramiko").handlers:
    logging.getLogger("paramiko").addHandler(logging.NullHandler())


class _RetriedTransportErrors(logging.Filter):
    """paramiko's transport thread logs each failed connection attempt at ERROR, its traceback
    one record a line ("Error reading SSH protocol banner", "Bad file descriptor" once the harness
    closes a half-open attempt). The harness retries on purpose and reports the last failure in
    its own error, so these records reach handlers (pytest's captured log, a user's logging set-up)
    only when this module logs at DEBUG (``--log-cli-level=DEBUG``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or log.isEnabledFor(logging.DEBUG)


logging.getLogger("paramiko.transport").addFilter(_RetriedTransportErrors())


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass
class CommandResult:
    """What a guest command did.

    ``exit_status`` is the command's status; for a command killed by a signal
    it is 128 + the signal number (137 for SIGKILL), as a shell reports it,
    and ``signal`` names the signal (``KILL``).
    """

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float
    #: Kernel problems (problems.Problem) that appeared while the command ran.
    problems: list = field(default_factory=list)
    #: The signal that killed the command (``KILL``, ``SEGV`` ...), or None if it exited.
    signal: str | None = None
    #: OOM kills (problems.OomKill) the guest kernel reported while the command ran.
    oom_kills: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Exit status 0."""
        return self.exit_status == 0

    @property
    def killed_by_oom(self) -> bool:
        """Killed by SIGKILL while the guest's OOM killer killed a process."""
        return self.signal == "KILL" and bool(self.oom_kills)


#: Stdin for a guest command: bytes, or a binary file read until EOF.
Stdin = bytes | BinaryIO | None

#: Callback polled while waiting on the guest; returns an exception to raise
#: (the guest panicked, QEMU exited) or None to keep waiting.
AbortCheck = Callable[[], BaseException | None]

OutputSink = Callable[[str, bytes], None]


# --------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------


class GuestSSH:
    """One SSH connection to the guest through the 127.0.0.1 port forward."""

    def __init__(self, port: int, key: KeyPair, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.key = key
        self._client: paramiko.SSHClient | None = None
        self._channel: CommandChannel | None = None
        self._channel_failed: str | None = None  # why the channel would not start on this connection
        self._channel_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """Whether the transport is up."""
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def try_connect(self, attempt_timeout: float = 5.0) -> str | None:
        """One connection attempt. None on success, else why it failed."""
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        pkey = paramiko.Ed25519Key.from_private_key_file(str(self.key.private))
        try:
            client.connect(self.host, port=self.port, username=GUEST_USER, pkey=pkey,
                           look_for_keys=False, allow_agent=False, timeout=attempt_timeout,
                           banner_timeout=attempt_timeout, auth_timeout=attempt_timeout,
                           channel_timeout=attempt_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
            _handle_exit_signal(transport)
        self._client = client
        self._channel = None
        self._channel_failed = None
        return None

    def probe(self, timeout: float) -> bool:
        """Whether the guest's sshd answers a channel open within ``timeout`` s (liveness)."""
        try:
            chan = self._transport().open_session(timeout=timeout)
        except (GuestCommandError, paramiko.SSHException, OSError, EOFError):
            return False
        chan.close()
        return True

    def connect(self, deadline: float, abort: AbortCheck, *, interval: float = 0.5) -> None:
        """Retry :meth:`try_connect` until ``deadline`` (monotonic); ``abort`` may end it early.

        Raises GuestCommandError with the last failure on timeout.
        """
        last = "no attempt made"
        while True:
            exc = abort()
            if exc is not None:
                raise exc
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestCommandError(f"could not log in to the guest over SSH on 127.0.0.1:{self.port}",
                                        detail=f"last attempt: {last}")
            last = self.try_connect(attempt_timeout=max(1.0, min(5.0, left))) or ""
            if not last:
                return
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def _transport(self) -> paramiko.Transport:
        t = self._client.get_transport() if self._client else None
        if t is None or not t.is_active():
            raise GuestCommandError("not connected to the guest over SSH")
        return t

    def run(self, command: str, *, timeout: float, abort: AbortCheck,
            on_output: OutputSink | None = None, stdin: Stdin = None, via: str = "auto") -> CommandResult:
        """Run ``command`` with ``sh -c`` semantics (the guest's login shell).

        ``stdin`` (bytes or a binary file, read until EOF) is the command's
        standard input; without it stdin is closed at once.
        Polls ``abort`` every 0.2 s so a guest panic ends the wait promptly.
        Raises GuestCommandError on timeout or if the connection drops before the
        command reports an exit status (the caller checks the VM first).

        ``via``: ``auto`` runs it on the connection's command channel
        (:mod:`harness.vm.channel`) when it can (stdin as bytes of at most
        :data:`~harness.vm.channel.MAX_STDIN`; ``on_output`` then gets all the output at the end)
        and falls back to an exec channel of its own; ``exec`` (output streamed to ``on_output``
        as it comes) and ``channel`` insist on one (``channel`` raises GuestCommandError if it cannot).
        """
        if via not in ("auto", "channel", "exec"):
            raise ValueError(f"via must be auto, channel or exec, not {via!r}")
        small_stdin = stdin is None or (isinstance(stdin, bytes | bytearray) and len(stdin) <= MAX_STDIN)
        if via == "channel" and not small_stdin:
            raise GuestCommandError(f"the command channel takes stdin as bytes of at most {MAX_STDIN} bytes",
                                    hint="pass via='exec'")
        log.debug("guest$ %s", command)
        result: CommandResult | None = None
        if via == "channel" or (via == "auto" and small_stdin):
            data = bytes(stdin) if isinstance(stdin, bytes | bytearray) else b""
            result = self._run_on_channel(command, timeout, abort, data, insist=via == "channel")
            if result is not None and on_output is not None:
                on_output("stdout", result.stdout.encode())
                on_output("stderr", result.stderr.encode())
        path = "channel" if result is not None else "exec"
        if result is None:
            result = self._run_exec(command, timeout=timeout, abort=abort, on_output=on_output, stdin=stdin)
        log.debug("guest: exit %s in %.2f s (%s, %d bytes out, %d err): %s", result.exit_status, result.duration,
                  path, len(result.stdout), len(result.stderr), command)
        return result

    def _command_channel(self) -> CommandChannel | None:
        """The connection's command channel (started on first use), or None if it will not start."""
        with self._channel_lock:
            if self._channel is not None and not self._channel.broken:
                return self._channel
            if self._channel_failed is not None:
                return None
            try:
                self._channel = CommandChannel(self._transport())
            except ChannelError as e:
                self._channel_failed = str(e)
                self._channel = None
            return self._channel

    def _run_on_channel(self, command: str, timeout: float, abort: AbortCheck, stdin: bytes,
                        *, insist: bool) -> CommandResult | None:
        """The command's result over the command channel; None to fall back to an exec channel."""
        chan = self._command_channel()
        if chan is None:
            if insist:
                raise GuestCommandError(f"the guest's command channel would not start: {self._channel_failed}")
            return None
        start = time.monotonic()
        try:
            reply = chan.try_run(command, timeout=timeout, stdin=stdin, abort=abort)
        except ChannelError as e:
            if time.monotonic() - start >= timeout:
                raise GuestCommandError(f"guest command timed out after {timeout:g} s: {command}",
                                        hint="pass a longer timeout", detail=str(e)) from e
            raise GuestCommandError(f"SSH connection lost while running {command!r}", detail=str(e)) from e
        if reply is None:  # another thread is using it
            if insist:
                raise GuestCommandError("the command channel is busy with another thread's command")
            return None
        if reply.timed_out:
            raise timed_out_error(command, timeout, reply)
        return CommandResult(command, reply.status, reply.stdout.decode("utf-8", "replace"),
                             reply.stderr.decode("utf-8", "replace"), time.monotonic() - start,
                             signal=reply.signal_name)

    def _run_exec(self, command: str, *, timeout: float, abort: AbortCheck,
                  on_output: OutputSink | None = None, stdin: Stdin = None) -> CommandResult:
        """Run ``command`` over an exec channel of its own (the path before the command channel)."""
        start = time.monotonic()
        try:
            chan = self._transport().open_session(timeout=10)
            chan.exec_command(command)
            if stdin is None:
                chan.shutdown_write()
            else:
                _feed_stdin(chan, stdin)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise GuestCommandError(f"could not start {command!r} in the guest: {e}") from e
        out, err = bytearray(), bytearray()
        try:
            status = _pump_command(chan, start + timeout, abort, out, err, on_output)
        finally:
            chan.close()
        if status is None:
            exc = abort()
            if exc is not None:
                raise exc
            if time.monotonic() >= start + timeout:
                raise GuestCommandError(f"guest command timed out after {timeout:g} s: {command}",
                                        hint="pass a longer timeout",
                                        detail=_tail_text(out, err))
            raise GuestCommandError(f"SSH connection lost while running {command!r}",
                                    detail=_tail_text(out, err))
        return CommandResult(command, status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                             time.monotonic() - start, signal=getattr(chan, "numa_harness_signal", None))

    def send_poweroff(self, command: str = "poweroff -f") -> bool:
        """Start ``command`` (which never answers) in the guest. True if it was sent."""
        try:
            chan = self._transport().open_session(timeout=3)
            chan.exec_command(command)
            return True
        except (GuestCommandError, paramiko.SSHException, OSError, EOFError):
            return False

    def shell(self, abort: AbortCheck) -> int:
        """An interactive login shell on the user's terminal. Returns its exit status."""
        import termios
        import tty

        in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
        size = _terminal_size(out_fd)
        chan = self._transport().open_session(timeout=10)
        chan.get_pty(term=os.environ.get("TERM", "xterm"), width=size[0], height=size[1])
        chan.invoke_shell()
        saved = termios.tcgetattr(in_fd) if os.isatty(in_fd) else None
        try:
            if saved is not None:
                tty.setraw(in_fd)
            return _pump_shell(chan, in_fd, out_fd, size, abort)
        finally:
            if saved is not None:
                termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
            chan.close()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _pump_command(chan: paramiko.Channel, deadline: float, abort: AbortCheck,
                  out: bytearray, err: bytearray, on_output: OutputSink | None) -> int | None:
    """Collect output until an exit status (returned), a lost channel or the deadline (None)."""
    while True:
        # Read `finished` before draining: output always precedes exit-status/close,
        # so a drain after seeing it gets everything.
        transport = chan.get_transport()
        finished = chan.exit_status_ready() or chan.closed or transport is None or not transport.is_active()
        got = _drain(chan, out, err, on_output)
        if finished:
            _drain(chan, out, err, on_output)
            # paramiko flags a channel closed without an exit-status message as
            # "ready" with status -1: that is a lost connection, not an exit.
            status = chan.exit_status if chan.exit_status_ready() else -1
            return status if status >= 0 else None
        exc = abort()
        if exc is not None:
            raise exc
        if time.monotonic() >= deadline:
            return None
        if not got:
            select.select([chan], [], [], 0.2)


def _feed_stdin(chan: paramiko.Channel, stdin: bytes | BinaryIO) -> None:
    """Send ``stdin`` to the command from a daemon thread, then EOF (a slow pipe never blocks us)."""

    def feed() -> None:
        try:
            if isinstance(stdin, bytes | bytearray):
                chan.sendall(bytes(stdin))
            else:
                while chunk := stdin.read(65536):
                    chan.sendall(chunk)
            chan.shutdown_write()
        except (OSError, EOFError, ValueError, paramiko.SSHException):
            pass  # the command ended or the connection dropped: the main loop reports it

    threading.Thread(target=feed, name="ssh-stdin", daemon=True).start()


def _signal_status(name: str) -> int:
    """128 + the number of signal ``name`` (``KILL`` -> 137); 255 if unknown."""
    try:
        return 128 + int(_signal.Signals[f"SIG{name}"])
    except KeyError:
        return 255


def _handle_exit_signal(transport: paramiko.Transport) -> None:
    """Teach ``transport``'s channels the ``exit-signal`` request (RFC 4254 6.10).

    paramiko ignores it, so a command killed by a signal (the OOM killer's
    SIGKILL) looked like a lost connection. The channel then gets
    ``exit_status`` 128+N and ``numa_harness_signal`` = the signal's name.
    """
    table = dict(transport._channel_handler_table)  # type: ignore[attr-defined]
    original = table[MSG_CHANNEL_REQUEST]

    def handle(chan: paramiko.Channel, m: paramiko.Message) -> None:
        pos = m.packet.tell()
        if m.get_text() == "exit-signal":
            m.get_boolean()  # want_reply: always false for exit-signal
            name = m.get_text()
            chan.numa_harness_signal = name  # type: ignore[attr-defined]
            chan.exit_status = _signal_status(name)
            chan.status_event.set()
            return
        m.packet.seek(pos)
        original(chan, m)

    table[MSG_CHANNEL_REQUEST] = handle
    transport._channel_handler_table = table  # type: ignore[attr-defined]


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray, on_output: OutputSink | None) -> bool:
    """Read what the channel has ready, stdout then stderr, into ``out``/``err``; whether any came."""
    got = False
    for stream, ready, recv, buf in (("stdout", chan.recv_ready, chan.recv, out),
                                     ("stderr", chan.recv_stderr_ready, chan.recv_stderr, err)):
        while ready():
            data = recv(65536)
            if not data:
                break
            buf += data
            got = True
            if on_output:
                on_output(stream, data)
    return got


def _pump_shell(chan: paramiko.Channel, in_fd: int, out_fd: int, size: tuple[int, int],
                abort: AbortCheck) -> int:
    while True:
        exc = abort()
        if exc is not None:
            raise exc
        new_size = _terminal_size(out_fd)
        if new_size != size:
            size = new_size
            chan.resize_pty(width=size[0], height=size[1])
        ready, _, _ = select.select([chan, in_fd], [], [], 0.3)  # type: ignore[type-var]
        if chan in ready or chan.recv_ready():
            data = chan.recv(65536)
            if not data:
                break
            os.write(out_fd, data)
        if chan.recv_stderr_ready():
            os.write(out_fd, chan.recv_stderr(65536))
        if in_fd in ready:
            data = os.read(in_fd, 1024)
            if not data:
                chan.shutdown_write()
            else:
                chan.sendall(data)
        if chan.exit_status_ready() and not chan.recv_ready():
            break
    # The server sends EOF before the exit status: give it a moment to arrive.
    deadline = time.monotonic() + 5
    while not chan.exit_status_ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    status = chan.exit_status if chan.exit_status_ready() else -1
    return status if status >= 0 else -1


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        cols, rows = os.get_terminal_size(fd)
        return cols, rows
    except OSError:
        cols, rows = shutil.get_terminal_size()
        return cols, rows


def _tail_text(out: bytes | bytearray, err: bytes | bytearray, n: int = 20) -> str:
    parts = []
    for name, data in (("stdout", out), ("stderr", err)):
        lines = bytes(data).decode("utf-8", "replace").splitlines()[-n:]
        if lines:
            parts.append(f"last {name} lines:\n" + "\n".join(lines))
    return "\n".join(parts) or "(no output)"


__all__ = ["CommandResult", "GuestSSH", "AbortCheck"]
