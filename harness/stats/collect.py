"""Taking a snapshot: one guest command, one SSH round trip.

The guest side is ``harness/guest/files/snapshot.sh`` (POSIX sh), which the image carries at
:data:`IN_IMAGE`; this module runs it with the arguments asked for and checks its output is whole.
"""

from __future__ import annotations

import shlex

from harness.errors import GuestCommandError
from harness.guest.protocol import GUEST_BIN_DIR, guest_bin_name
from harness.runner import GuestRunner

#: The snapshot program in the image (every non-init guest file lands in GUEST_BIN_DIR, without ``.sh``).
IN_IMAGE = f"{GUEST_BIN_DIR}/{guest_bin_name('snapshot.sh')}"

#: A snapshot reads a few hundred small files; under TCG on a loaded host this stays well below.
DEFAULT_TIMEOUT = 60.0


def snapshot_args(*, pid: int | None = None, cgroup: str | None = None, cxl: bool = False,
                  daxctl: bool = False, boot_log: bool = True) -> list[str]:
    args: list[str] = []
    if pid is not None:
        args += ["-p", str(int(pid))]
    if cgroup:
        args += ["-g", cgroup]
    if cxl:
        args.append("-c")
    if daxctl:
        args.append("-x")
    if not boot_log:
        args.append("-B")
    return args


def snapshot_command(args: list[str]) -> str:
    """The guest command line that prints one snapshot."""
    return shlex.join([IN_IMAGE, *args])


def collect(runner: GuestRunner, *, pid: int | None = None, cgroup: str | None = None, cxl: bool = False,
            daxctl: bool = False, boot_log: bool = True, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run the snapshot script in the guest; its raw text (checked complete)."""
    args = snapshot_args(pid=pid, cgroup=cgroup, cxl=cxl, daxctl=daxctl, boot_log=boot_log)
    result = runner.run(snapshot_command(args), timeout=timeout, check=False)
    text: str = result.stdout
    if result.exit_status != 0 or not text.rstrip().endswith("@@ end"):
        raise GuestCommandError(f"the guest's statistics snapshot failed (exit status {result.exit_status})",
                                hint="is /sys mounted and the guest healthy? see the detail",
                                detail=((result.stderr or "") + text[-2000:]).strip())
    return text
