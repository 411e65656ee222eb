"""The command channel's framing (pure), and its guest program ``cmdchan`` run ON THE HOST.

The framing tests feed :class:`harness.vm.channel.ReplyParser` byte streams cut at every
place; the program tests build ``cmdchan`` with the guest programs' Makefile and talk to it
through a pipe with the same encoder and parser the harness uses, so the two ends cannot
drift apart. The live comparison with the exec path is in tests/live/test_channel_live.py.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from harness.resources import guest_programs_dir
from harness.vm.channel import BANNER, ChannelError, Reply, ReplyParser, encode_request, parse_reply_header


def frame(seq: int, status: int, sig: int, out: bytes, err: bytes, flag: str = "-") -> bytes:
    return b"R %d %d %d %d %d %s\n" % (seq, status, sig, len(out), len(err), flag.encode()) + out + err


def test_request_frame_carries_lengths_and_timeout_in_ms():
    assert encode_request(7, "echo hi", b"ab\x00", 1.5) == b"C 7 7 3 1500\necho hiab\x00"
    assert encode_request(1, "true") == b"C 1 4 0 0\ntrue"
    assert encode_request(2, "é") == b"C 2 2 0 0\n\xc3\xa9"  # lengths in bytes, not characters


def test_header_fields():
    assert parse_reply_header(b"R 3 137 9 10 0 t") == (3, 137, 9, 10, 0, True)
    assert parse_reply_header(b"R 1 0 0 0 0 -") == (1, 0, 0, 0, 0, False)


@pytest.mark.parametrize("bad", [b"", b"R 1 0 0 0 -", b"X 1 0 0 0 0 -", b"R 1 0 0 x 0 -", b"R 1 0 0 0 0 ?",
                                 b"R 1 -1 0 0 0 -"])
def test_malformed_headers_are_refused(bad):
    with pytest.raises(ChannelError):
        parse_reply_header(bad)


def test_a_stream_cut_anywhere_parses_to_the_same_replies():
    out, err = b"line\n\x00binary R 9 9 9 9 9 -\n", b"warn\n"
    stream = BANNER + frame(1, 3, 0, out, err) + frame(2, 137, 9, b"", b"", "t") + frame(3, 0, 0, b"", b"x")
    want = [Reply(1, 3, 0, out, err, False), Reply(2, 137, 9, b"", b"", True), Reply(3, 0, 0, b"", b"x", False)]
    for cut in range(len(stream) + 1):
        p = ReplyParser()
        got = p.feed(stream[:cut]) + p.feed(stream[cut:])
        assert got == want, cut
    p = ReplyParser()
    assert [r for i in range(len(stream)) for r in p.feed(stream[i:i + 1])] == want


def test_no_reply_before_the_banner_and_a_wrong_banner_is_an_error():
    p = ReplyParser()
    assert p.feed(b"NHCH") == [] and not p.started
    assert p.feed(b"AN 1\n") == [] and p.started
    with pytest.raises(ChannelError, match="did not start"):
        ReplyParser().feed(b"sh: cmdchan: not found\n")


def test_signal_names():
    assert Reply(1, 137, 9, b"", b"", False).signal_name == "KILL"
    assert Reply(1, 0, 0, b"", b"", False).signal_name is None


# -- the guest program, on the host --------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cmdchan")
    proc = subprocess.run(["make", "-s", "-C", str(guest_programs_dir()), f"OUT={d}"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return d / "cmdchan"


class Host:
    """cmdchan over a pipe, driven by the harness's encoder and parser."""

    def __init__(self, agent: Path) -> None:
        self.proc = subprocess.Popen([str(agent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=agent.parent)
        self.parser = ReplyParser()
        self.seq = 0

    def run(self, command: str, stdin: bytes = b"", timeout: float = 0) -> Reply:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.seq += 1
        self.proc.stdin.write(encode_request(self.seq, command, stdin, timeout))
        self.proc.stdin.flush()
        while True:
            data = self.proc.stdout.read1(65536)
            assert data, "cmdchan exited"
            replies = self.parser.feed(data)
            if replies:
                assert len(replies) == 1 and replies[0].seq == self.seq
                return replies[0]

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(10)


def test_agent_keeps_each_commands_status_stdout_and_stderr(agent):
    h = Host(agent)
    try:
        assert h.run("printf 'a\\0b'; echo err >&2; exit 3") == Reply(1, 3, 0, b"a\x00b", b"err\n", False)
        assert h.run("cat", stdin=b"in\x00put" * 10000).stdout == b"in\x00put" * 10000
        assert h.run("cat").stdout == b""  # stdin closed at once without any
        big = h.run("head -c 3000000 /dev/zero; head -c 200000 /dev/zero >&2")
        assert (len(big.stdout), len(big.stderr), big.status) == (3000000, 200000, 0)
        assert h.run("kill -9 $$") == Reply(5, 137, 9, b"", b"", False)
        assert h.run("cd /; pwd").stdout == b"/\n"
        assert h.run("pwd").stdout == f"{agent.parent}\n".encode()  # each command its own shell
    finally:
        assert h.close() == 0


def test_agent_kills_a_hung_command_at_its_timeout_and_stays_usable(agent):
    h = Host(agent)
    try:
        t0 = time.monotonic()
        r = h.run("echo started; sleep 30 & sleep 30", timeout=0.3)
        assert r.timed_out and r.signal == 9 and r.stdout == b"started\n"
        assert time.monotonic() - t0 < 5
        assert h.run("echo still here") == Reply(2, 0, 0, b"still here\n", b"", False)
    finally:
        assert h.close() == 0


def test_agent_does_not_wait_for_a_background_child_holding_its_output(agent):
    h = Host(agent)
    try:
        t0 = time.monotonic()
        r = h.run("sleep 20 & echo bg")
        assert (r.status, r.stdout) == (0, b"bg\n")
        assert time.monotonic() - t0 < 5
    finally:
        h.close()


def test_agent_exits_on_a_malformed_request(agent):
    p = subprocess.run([str(agent)], input=b"nonsense\n", capture_output=True, timeout=10)
    assert p.returncode == 2 and p.stdout == BANNER and b"malformed" in p.stderr
