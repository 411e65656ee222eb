"""Boot milestones on a console the kernel floods while the guest's /init prints them.

A kernel record can land inside a line the guest's /init is printing (a 7.2 boot was failed
that way, waiting for an ``init running`` line the console had cut in two). Here a writer to
``/dev/kmsg`` runs beside /init for the whole boot, at the kernel's most verbose console level,
so the milestone lines are cut by kernel records; every boot must still reach SSH, with every
milestone, in order. The flood comes from the guest itself (a second cpio archive appended to
the harness's initramfs, started as ``rdinit`` before it execs the harness's ``/init``), not
from a mock: the kernel, its console and QEMU's serial port are the real ones.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from harness.image.cpio import CpioWriter
from harness.vm import console as con
from harness.vm.machine import VM, BootSpec, pid_alive

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

QEMU = "qemu-system-x86_64"
MACHINE = ["-machine", "q35", "-m", "1G", "-smp", "2", "-accel", "tcg", "-cpu", "max,-hypervisor"]
BOOTS = 3
#: A guest line cut by a kernel record: some text, then a kernel time stamp.
CUT = re.compile(r"^[^\[\s].*?\[\s*\d+\.\d+\]")

FLOOD_INIT = """\
#!/bin/sh
# Flood the kernel log (and so the console) from before /init starts until well after sshd.
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
(
    i=0
    while read -r up _ < /proc/uptime && [ "${up%.*}" -lt 60 ]; do
        echo "flood $i: a kernel record written while the guest prints its milestones" > /dev/kmsg
        i=$((i + 1))
    done
) < /dev/null > /dev/null 2>&1 &
exec /init
"""


@pytest.fixture(scope="module")
def flood_guest(tmp_path_factory) -> tuple[Path, Path]:
    """(kernel image, the harness's initramfs with the flooding rdinit appended)."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (scripts/install-host-deps)")
    from harness.image.build import build_initramfs
    from harness.kernel.debian import default_kernel

    kernel = default_kernel()
    initrd = tmp_path_factory.mktemp("flood") / "initrd"
    with open(initrd, "wb") as out:
        out.write(build_initramfs(kernel).path.read_bytes())
        w = CpioWriter(out)
        w.file("flood-init", FLOOD_INIT.encode(), 0o755)
        w.finish()
    return kernel.image, initrd


def test_every_boot_reaches_ssh_on_a_flooded_console(flood_guest):
    cut_milestones = cut_lines = 0
    for n in range(BOOTS):
        seen: list[str] = []
        spec = BootSpec(MACHINE, flood_guest[0], flood_guest[1],
                        append="rdinit=/flood-init printk.devkmsg=on loglevel=8 initcall_debug")
        t0 = time.monotonic()
        vm = VM(spec, on_milestone=seen.append)
        with vm:
            assert vm.run("echo up").stdout == "up\n"
            text = vm.console_log.read_text(errors="replace")
        assert not pid_alive(vm.pid)
        lines = [con.clean_line(ln) for ln in text.splitlines()]
        floods = sum("flood " in ln for ln in lines)
        cut = [ln for ln in lines if CUT.match(ln)]
        cut_lines += len(cut)
        cut_milestones += sum(con.GUEST_PREFIX in ln for ln in cut)
        print(f"\nboot {n + 1}: SSH in {time.monotonic() - t0:.1f} s, {floods} flood records, "
              f"{len(cut)} guest lines cut by a kernel record: {cut[:3]}")
        assert seen == list(con.MILESTONES), seen
        assert floods > 100, "the flood did not reach the console"
    print(f"milestone lines cut in {BOOTS} boots: {cut_milestones}")
    assert cut_lines > 0, "no guest line was cut by a kernel record: the flood tested nothing"
