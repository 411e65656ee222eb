"""The command channel against the exec path on one live guest: the same commands give the same
exit statuses, stdout and stderr; a command that hangs is killed at its timeout in the guest and
the channel goes on; the statistics snapshot takes the channel.

How we know the checks can fail: every comparison is between two independent paths through the
guest (an exec channel with dropbear's own shell, and ``cmdchan``'s spawned shell), on commands
whose answers differ from each other (exit statuses 0/3/137, output on both streams, binary
bytes, stdin echoed back), so a path that mixed up streams, dropped bytes or lost the status
fails. The hang test checks in the guest that the killed command's process is gone.
The round-trip figures are printed, never asserted (``make bench`` reports them).
"""

from __future__ import annotations

import statistics
import time

import pytest

from harness.boot import boot
from harness.errors import GuestCommandError
from harness.stats import snapshot

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

COMMANDS = [
    ("true", None),
    ("echo out; echo err >&2; exit 3", None),
    ("printf 'a\\000b\\377'", None),
    ("cat /proc/sys/kernel/numa_balancing; ls /nonexistent", None),
    ("kill -9 $$", None),
    ("wc -c; tr a-z A-Z", b"hello\x00world\n" * 1000),
    ("cat /sys/devices/system/node/online; echo $HOME; pwd; id -u", None),
]


@pytest.fixture(scope="module")
def vm():
    with boot("numa-basic", accel="tcg", baseline=False) as machine:
        yield machine


@pytest.mark.parametrize("command,stdin", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_channel_and_exec_give_the_same_result(vm, command, stdin):
    a = vm.vm.run(command, check=False, stdin=stdin, via="channel", timeout=60)
    b = vm.vm.run(command, check=False, stdin=stdin, via="exec", timeout=60)
    assert (a.exit_status, a.signal, a.stdout, a.stderr) == (b.exit_status, b.signal, b.stdout, b.stderr)


def test_a_hung_command_is_killed_and_the_channel_goes_on(vm):
    t0 = time.monotonic()
    with pytest.raises(GuestCommandError, match="timed out after 2 s"):
        vm.vm.run("echo $$ > /tmp/hung.pid; exec sleep 600", via="channel", timeout=2)
    assert time.monotonic() - t0 < 30
    pid = vm.vm.run("cat /tmp/hung.pid", via="channel", timeout=30).stdout.strip()
    assert vm.vm.run(f"test -d /proc/{pid}", check=False, via="exec", timeout=30).exit_status == 1
    assert vm.vm.run("echo alive", via="channel", timeout=30).stdout == "alive\n"


def test_statistics_snapshot_takes_the_channel_and_reads_the_same(vm):
    chan = vm.vm._ssh._command_channel()
    assert chan is not None
    seq = chan._seq
    s = snapshot(vm)
    assert chan._seq == seq + 1 and not chan.broken  # one request on the channel, no exec channel
    assert sorted(s.nodes) == [0, 1] and s.refreshed


def test_round_trip_figures(vm):
    def median(via: str) -> float:
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            vm.vm.run("true", via=via, timeout=30)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    median("channel")
    ch, ex = median("channel"), median("exec")
    print(f"\nwarm round trip of `true`: channel {ch * 1000:.1f} ms, exec {ex * 1000:.1f} ms median "
          f"({ex / ch:.1f}x)")
