"""A fresh machine per use from a snapshot taken once right after boot and guest set-up.

:func:`snapshot_for` returns the cached snapshot of a prepared machine, taking it first if there
is none: boot with the RAM in shared files, carry out the topology's guest set-up, put the
guest in its baseline state, close SSH, write the device state (:mod:`harness.vm.snapshot`).
It lives in ``cache_dir()/snapshots/<key>``, the key a digest of everything that made the VM
(:func:`snapshot_inputs`: QEMU binary and version, the machine argv, kernel and initramfs
contents, kernel command line, modules, the topology file, the accelerator), so a change to
any of them takes a new one; it is written beside its place and renamed in under a lock, so
concurrent first uses (pytest-xdist workers) take it once.

:func:`restore` starts a new QEMU from it: the RAM files are mapped private (nothing is
copied), the guest resumes where the snapshot left it, with the same SSH key; its clock is
stepped to the host's. Every restore is a guest no earlier use has touched.

A machine QEMU cannot snapshot (CXL devices save no state) gets a reason from
:func:`snapshot_blocker` instead; the caller boots it fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.boot.machine import Machine
from harness.boot.prepare import Prepared
from harness.cachefs import cache_errors, locked
from harness.errors import BootError
from harness.guest.setup import SetupResult, apply_guest_setup, has_setup
from harness.paths import cache_dir
from harness.qemu.preflight import capabilities
from harness.vm.machine import VM
from harness.vm.snapshot import STATE_FILE, ram_files, ram_files_argv
from harness.vm.snapshot import snapshot_blocker as _argv_blocker

#: Bump when the snapshot's layout or the way it is taken changes.
FORMAT = 1
META = "meta.pickle"


@dataclass(frozen=True)
class Snapshot:
    """A complete snapshot directory."""

    directory: Path

    @property
    def state_file(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def ram_dir(self) -> Path:
        return self.directory / "ram"

    @property
    def key(self) -> Path:
        """The private key the snapshot's guest accepts (``.pub`` beside it)."""
        return self.directory / "id_ed25519"

    def meta(self) -> tuple[SetupResult, dict[str, str]]:
        """The guest set-up's result and the guest state the snapshot holds."""
        setup, state = pickle.loads((self.directory / META).read_bytes())
        return setup, state


def snapshot_blocker(p: Prepared) -> str | None:
    """Why ``p``'s machine cannot be restored from a snapshot, or None."""
    return _argv_blocker(p.spec.machine_argv)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot_inputs(p: Prepared) -> dict[str, object]:
    """Everything that made ``p``'s VM and its guest state, as JSON-able data."""
    qemu = Path(p.qemu)
    st = qemu.stat()
    return {
        "format": FORMAT,
        "qemu": [str(qemu), st.st_size, st.st_mtime_ns, list(capabilities(p.qemu).version)],
        "machine": p.spec.machine_argv,
        "kernel": _file_digest(p.kernel.image),
        "initrd": _file_digest(p.image.path),
        "append": p.spec.append,
        "modules": p.spec.modules,
        "topology": p.loaded.path.read_text(errors="replace"),
        "accel": p.accel.accel,
    }


def snapshot_key(inputs: dict[str, object]) -> str:
    """The cache key of a snapshot made from ``inputs`` (pure)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def snapshot_for(p: Prepared, *, say=None) -> Snapshot:
    """The snapshot of ``p``'s machine after set-up, taken now if it is not cached."""
    key = snapshot_key(snapshot_inputs(p))
    root = cache_dir() / "snapshots"
    final = root / key
    snap = Snapshot(final)
    if (final / META).is_file():
        return snap
    with cache_errors(f"creating {root}"):
        root.mkdir(parents=True, exist_ok=True)
    with locked(final):
        if (final / META).is_file():
            return snap
        if say is not None:
            say(f"numa-harness: taking a snapshot of {p.loaded.name} after boot and set-up (once; cached as {final})")
        build = root / f".{key}.{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        (build / "ram").mkdir(parents=True)
        try:
            _take(p, Snapshot(build))
            with cache_errors(f"writing {final}"):
                shutil.rmtree(final, ignore_errors=True)
                os.rename(build, final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return snap


def _take(p: Prepared, snap: Snapshot) -> None:
    """Boot ``p`` with its RAM in ``snap``'s files, set it up, and save it there."""
    spec = dataclasses.replace(p.spec, machine_argv=ram_files_argv(p.spec.machine_argv, snap.ram_dir, restore=False),
                               workdir=None, detach=False, ssh_port=None, name=f"{p.spec.name}-snapshot")
    vm = VM(spec)
    vm.start()
    try:
        t = p.loaded.topology
        setup = apply_guest_setup(vm, t, kernel_image=p.kernel.image) if has_setup(t) else SetupResult()
        m = Machine(name=p.loaded.name, prepared=p, vm=vm, setup=setup)
        state = m.apply_state()
        shutil.copy2(vm.key_path, snap.key)
        shutil.copy2(f"{vm.key_path}.pub", f"{snap.key}.pub")
        vm.save_snapshot(snap.state_file)
        (snap.directory / META).write_bytes(pickle.dumps((setup, state)))
    finally:
        vm.shutdown()


def restore(p: Prepared, snap: Snapshot, *, name: str | None = None) -> Machine:
    """A new machine of ``p`` resumed from ``snap``: set up, in the baseline state, its clock stepped."""
    missing = [f for f in ram_files(p.spec.machine_argv, snap.ram_dir).values() if not f.is_file()]
    if missing:
        raise BootError(f"the snapshot in {snap.directory} lacks {missing[0].name}",
                        hint=f"remove {snap.directory}: the next use takes it again")
    spec = dataclasses.replace(p.spec, machine_argv=ram_files_argv(p.spec.machine_argv, snap.ram_dir, restore=True),
                               workdir=None, detach=False, ssh_port=None, incoming=snap.state_file, key=snap.key,
                               name=name or p.spec.name)
    setup, state = snap.meta()
    vm = VM(spec)
    vm.start()
    try:
        # The guest's clock stands where the snapshot was taken: step it to now.
        vm.run(f"date -u -s @{time.time():.0f} >/dev/null", timeout=30)
        return Machine(name=p.loaded.name, prepared=p, vm=vm, setup=setup, state=dict(state))
    except BaseException:
        vm.shutdown()
        raise
