"""Choosing the accelerator: ``auto`` | ``kvm`` | ``tcg``.

``/dev/kvm`` existing and answering ioctls does not mean KVM can run a guest
(on some hosts, e.g. nested ones backed by another hypervisor, ``-cpu host``
aborts QEMU or the guest dies at once with ``KVM internal error``). So ``auto`` proves KVM with a real, short boot of the same
kernel and initramfs (``harness.init=poweroff``: the guest's /init prints its
first milestone and powers off) and falls back to TCG with the reason. The
result is cached per (QEMU binary, kernel release, host boot) in
``cache_dir()/accel.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import QemuError
from harness.guest.protocol import INIT_POWEROFF, guest_cmdline
from harness.paths import cache_dir
from harness.qemu.bootargs import KVM_PROBE_MACHINE, bare_argv
from harness.vm.console import INIT_RUNNING, milestones_in

TCG_CPU = "max,-hypervisor"  # -hypervisor: stock kernels' CXL region commit needs it (FACTS.md)
KVM_CPU = "host"
PROBE_TIMEOUT = 20.0
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
CACHE_FILE = "accel.json"


@dataclass(frozen=True)
class AccelChoice:
    """``accel`` for ``-accel``, ``cpu`` for ``-cpu``, and why (shown to the user)."""

    accel: str
    cpu: str
    reason: str


def tcg(reason: str) -> AccelChoice:
    """The TCG choice with ``reason``."""
    return AccelChoice("tcg", TCG_CPU, reason)


def kvm_device_problem(dev: str = "/dev/kvm") -> str | None:
    """Why ``dev`` cannot be used (missing, no permission, wrong API), or None if it can."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{dev} does not exist (no KVM module, or not a VM host)"
    except PermissionError:
        return f"no permission to open {dev} (add the user to the 'kvm' group)"
    except OSError as e:
        return f"cannot open {dev}: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as e:
        return f"{dev} does not answer KVM_GET_API_VERSION: {e.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{dev} reports KVM API version {version}, expected {KVM_API_VERSION}"
    return None


def probe_argv(qemu_binary: str, kernel: Path, initrd: Path, console_log: Path) -> list[str]:
    """The QEMU command line of the KVM probe boot (pure): the guest's init powers off at once."""
    append = " ".join(["console=ttyS0", "panic=-1", *guest_cmdline(init=INIT_POWEROFF)])
    return bare_argv(qemu_binary, KVM_PROBE_MACHINE, kernel=kernel, initrd=initrd, append=append,
                     console_log=console_log)


def judge_probe(exit_status: int | None, stderr: str, console: str) -> str | None:
    """None if the probe boot proves KVM works, else the one-line reason it does not (pure).

    Success is a clean exit (0) after the guest's ``init running`` line.
    """
    for line in stderr.splitlines():
        if "KVM internal error" in line or "failed to set MSR" in line:
            return line.replace("qemu-system-x86_64: ", "").strip()
    if exit_status is None:
        return f"the guest did not power off within {PROBE_TIMEOUT:g} s"
    seen = INIT_RUNNING in milestones_in(console)
    if exit_status != 0:
        first = next((line for line in stderr.splitlines() if line.strip()), "")
        return f"QEMU exited with status {exit_status}" + (f": {first.strip()}" if first else "")
    if not seen:
        return "the guest powered off without reaching its init"
    return None


def probe_kvm(qemu_binary: str, kernel: Path, initrd: Path, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Boot the guest once under KVM; None if it worked, else why not."""
    from harness.vm.process import popen_qemu, terminate_process

    with tempfile.TemporaryDirectory(prefix="numa-harness-kvm-") as tmp:
        log, err = Path(tmp) / "console.log", Path(tmp) / "qemu.log"
        try:
            proc = popen_qemu(probe_argv(qemu_binary, kernel, initrd, log), err, detach=False)
        except OSError as e:
            raise QemuError(f"cannot run {qemu_binary}: {e.strerror}") from e
        try:
            status = _wait_probe(proc, err, timeout)
        finally:
            terminate_process(proc)
        return judge_probe(status, _read(err), _read(log))


def _wait_probe(proc: subprocess.Popen, err: Path, timeout: float) -> int | None:
    """QEMU's exit status, or None on timeout or a KVM error (QEMU pauses on those)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = proc.poll()
        if status is not None:
            return status
        if "KVM internal error" in _read(err):
            return None
        time.sleep(0.1)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def boot_id() -> str:
    """This host boot's id (a KVM verdict does not outlive a reboot)."""
    return _read(Path("/proc/sys/kernel/random/boot_id")).strip() or "unknown"


def cache_key(qemu_binary: str, kernel_release: str, host_boot: str) -> str:
    """Key of a probe verdict in accel.json (pure)."""
    return f"{qemu_binary}|{kernel_release}|{host_boot}"


def _qemu_identity(qemu_binary: str) -> str:
    import shutil

    path = shutil.which(qemu_binary) or qemu_binary
    try:
        st = os.stat(path)
        return f"{os.path.realpath(path)}@{int(st.st_mtime)}"
    except OSError:
        return path


def _kernel_release(kernel: Path) -> str:
    from harness.kernel.user import read_bzimage_release

    try:
        return read_bzimage_release(kernel)
    except Exception:  # noqa: BLE001 - any unreadable image: key on the file itself
        st = kernel.stat()
        return f"{kernel.resolve()}@{int(st.st_mtime)}:{st.st_size}"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(path: Path, key: str, choice: AccelChoice) -> None:
    data = _load_cache(path)
    data[key] = asdict(choice) | {"probed_at": time.time()}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def choose_accel(requested: str, qemu_binary: str, kernel: Path, initrd: Path, *,
                 use_cache: bool = True) -> AccelChoice:
    """Pick the accelerator for ``requested`` (``auto``, ``kvm`` or ``tcg``).

    ``kvm`` raises QemuError if /dev/kvm is unusable (no run-time probe: the
    user asked for it). ``auto`` probes (or reads the cached verdict) and falls
    back to TCG, saying why.
    """
    if requested == "tcg":
        return tcg("TCG requested")
    if requested == "kvm":
        problem = kvm_device_problem()
        if problem:
            raise QemuError(f"KVM requested but {problem}", hint="use --accel tcg or --accel auto")
        return AccelChoice("kvm", KVM_CPU, "KVM requested")
    if requested != "auto":
        raise ValueError(f"accel must be auto, kvm or tcg, not {requested!r}")
    problem = kvm_device_problem()
    if problem:
        return tcg(f"{problem}; using TCG")
    path = cache_dir() / CACHE_FILE
    key = cache_key(_qemu_identity(qemu_binary), _kernel_release(kernel), boot_id())
    cached = _load_cache(path).get(key) if use_cache else None
    if cached:
        return AccelChoice(cached["accel"], cached["cpu"], cached["reason"] + " (cached)")
    failure = probe_kvm(qemu_binary, kernel, initrd)
    choice = tcg(f"KVM probe failed: {failure}; using TCG") if failure else \
        AccelChoice("kvm", KVM_CPU, "KVM probe boot succeeded")
    _store(path, key, choice)
    return choice
