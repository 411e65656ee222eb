"""Snapshots of a running guest: its RAM in files, its device state in one file; restore in a new QEMU.

A snapshot is taken from a VM whose RAM backends are files mapped shared
(:func:`ram_files_argv` with ``restore=False``): QMP ``stop``, the ``x-ignore-shared``
migration capability, ``migrate`` to a ``file:`` URI (:func:`save_state`). The shared RAM is
not copied into the stream (it is already in its files); only device state (a few MB) is.

A restore starts QEMU with the same machine, the RAM files mapped *private* and read-only on
the host side (``share=off,readonly=on,rom=off``: the guest writes copy-on-write pages of this
process, the snapshot's files never change, any number of restores may map them at once), and
``-incoming defer``; :func:`load_state` sets the same capability and runs
``migrate-incoming``. No RAM is copied on restore: pages fault in from the page cache as the
guest touches them.

QEMU's CXL devices (``cxl-type3``, ``pxb-cxl``, ``cxl-rp``, switch ports) save no device
state, so a restored CXL guest would be inconsistent: :func:`snapshot_blocker` says so, and
the caller boots such a machine fresh. Pure except :func:`save_state`/:func:`load_state`,
which talk QMP. Knows nothing of topologies or what the guest runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.errors import BootError
from harness.qemu.options import opt_escape
from harness.vm.qmp import QMPFailure, SyncQMP

RAM_BACKEND = "memory-backend-ram"
#: Device types that save no state for migration.
STATELESS_DEVICES = ("cxl-type3", "pxb-cxl", "cxl-rp", "cxl-upstream", "cxl-downstream", "cxl-switch-mailbox-cci")
STATE_FILE = "device-state"
CAPABILITY = "x-ignore-shared"


def snapshot_blocker(machine_argv: list[str]) -> str | None:
    """Why a VM of ``machine_argv`` cannot be snapshotted and restored, or None (pure)."""
    devices = [argv_value.split(",", 1)[0] for opt, argv_value in zip(machine_argv, machine_argv[1:])
               if opt == "-device"]
    stateless = sorted({d for d in devices if d in STATELESS_DEVICES})
    if stateless:
        return (f"QEMU's {', '.join(stateless)} save no device state, so a restored guest would be "
                "inconsistent")
    if not any(opt == "-object" and v.startswith(RAM_BACKEND + ",") for opt, v in zip(machine_argv, machine_argv[1:])):
        return "the machine has no memory-backend-ram objects to keep in files"
    return None


def _ram_id(props: list[str]) -> str:
    for p in props:
        if p.startswith("id="):
            return p[3:]
    raise BootError(f"a memory backend without an id: {','.join(props)}")


def ram_files(machine_argv: list[str], ram_dir: Path) -> dict[str, Path]:
    """Each RAM backend's id -> its file in ``ram_dir`` (pure)."""
    out = {}
    for opt, v in zip(machine_argv, machine_argv[1:]):
        if opt == "-object" and v.startswith(RAM_BACKEND + ","):
            rid = _ram_id(v.split(",")[1:])
            out[rid] = ram_dir / f"{rid}.ram"
    return out


def ram_files_argv(machine_argv: list[str], ram_dir: Path, *, restore: bool) -> list[str]:
    """``machine_argv`` with every ``memory-backend-ram`` turned into a ``memory-backend-file`` in
    ``ram_dir`` (pure): mapped shared to take a snapshot, private and read-only to restore one."""
    out = []
    prev = ""
    for arg in machine_argv:
        if prev == "-object" and arg.startswith(RAM_BACKEND + ","):
            props = [p for p in arg.split(",")[1:] if not p.startswith("share=")]
            path = ram_dir / f"{_ram_id(props)}.ram"
            mode = ["share=off", "readonly=on", "rom=off"] if restore else ["share=on"]
            arg = ",".join(["memory-backend-file", *props, f"mem-path={opt_escape(str(path))}", *mode])
        out.append(arg)
        prev = arg
    return out


def _wait_migration(qmp: SyncQMP, deadline: float, what: str) -> None:
    while True:
        try:
            info = qmp.execute("query-migrate", timeout=5)
        except QMPFailure as e:
            raise BootError(f"{what}: QEMU stopped answering: {e}") from e
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise BootError(f"{what} failed: {info.get('error-desc', status)}")
        if time.monotonic() > deadline:
            raise BootError(f"{what} did not finish in time (status {status})")
        time.sleep(0.02)


def _migrate(qmp: SyncQMP, commands: list[tuple[str, dict | None]], timeout: float, what: str) -> None:
    """Turn ``x-ignore-shared`` on, run ``commands`` (the last one starts the migration), wait for it."""
    deadline = time.monotonic() + timeout
    caps = ("migrate-set-capabilities", {"capabilities": [{"capability": CAPABILITY, "state": True}]})
    try:
        for command, arguments in [caps, *commands]:
            qmp.execute(command, arguments)
    except QMPFailure as e:
        raise BootError(f"{what} failed: {e}") from e
    _wait_migration(qmp, deadline, what)


def save_state(qmp: SyncQMP, state_file: Path, *, timeout: float = 120) -> None:
    """Stop the guest and write its device state to ``state_file`` (RAM stays in its shared files)."""
    _migrate(qmp, [("stop", None), ("migrate", {"uri": f"file:{state_file}"})], timeout, "taking a snapshot")


def load_state(qmp: SyncQMP, state_file: Path, *, timeout: float = 60) -> None:
    """Load ``state_file`` into a QEMU started with ``-incoming defer``; the guest stays paused."""
    _migrate(qmp, [("migrate-incoming", {"uri": f"file:{state_file}"})], timeout, "restoring the snapshot")
