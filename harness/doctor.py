"""``harness doctor``: what this host has and lacks for booting topologies, each finding with its fix.

Reads what the harness itself would use, through the same functions (QEMU preflight and its
cached capabilities, the accelerator probe and its cached verdict, the guest-tool lookup,
the cache), so a finding here is what a boot would meet. Pure data out (:class:`Finding`);
the CLI shows it as a table or JSON. Fixes name commands a wheel user has.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from harness.errors import HarnessError
from harness.hints import APT_QEMU, apt_install

#: Below this much free space in the cache, a first run (kernel ~0.6 GB unpacked, images) may fail.
MIN_FREE_BYTES = 2 << 30


@dataclass
class Finding:
    """One check: ``ok`` or not, whether a boot ``required`` it, what was seen and how to fix it."""

    check: str
    ok: bool
    required: bool
    detail: str
    fix: str | None = None
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def run_checks(qemu: str | None = None, *, probe_kvm: bool = True,
               progress: Callable[[str], None] | None = None) -> list[Finding]:
    """Every finding, in the order a boot meets them."""
    say = progress or (lambda _m: None)
    findings: list[Finding] = []
    say("QEMU")
    binary = _qemu(qemu, findings)
    say("guest tools")
    findings += _guest_tools()
    say("cache")
    findings.append(_cache())
    say("default kernel")
    kernel = _default_kernel(findings)
    say("KVM")
    findings.append(_kvm(binary, kernel, probe_kvm))
    findings.append(_plugin())
    return findings


def failed_required(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.required and not f.ok]


# --- the checks --------------------------------------------------------------------

def _qemu(explicit: str | None, findings: list[Finding]) -> str | None:
    from harness.qemu.preflight import MIN_VERSION, capabilities, find_binary

    try:
        binary = find_binary(explicit)
        caps = capabilities(binary)
    except HarnessError as e:
        findings.append(Finding("qemu", False, True, e.message, fix=e.hint or APT_QEMU))
        return None
    ok = caps.version[:2] >= MIN_VERSION
    need = ".".join(map(str, MIN_VERSION))
    findings.append(Finding("qemu", ok, True, f"QEMU {caps.version_text} at {binary}" + ("" if ok else f"; needs >= {need}"),
                            fix=None if ok else APT_QEMU, data={"path": binary, "version": caps.version_text}))
    if ok:
        findings.append(_presets(binary))
    return binary if ok else None


def _presets(binary: str) -> Finding:
    """Which stock presets this QEMU can run (each preset's argv through the preflight check)."""
    from harness.boot.prepare import backing_dir
    from harness.qemu.argv import machine_argv
    from harness.qemu.preflight import capabilities, check_argv, load_features, needed_types
    from harness.topology import load, preset_names

    argvs = {}
    for name in preset_names():
        argvs[name] = machine_argv(load(name).topology, accel="tcg", files_dir=str(backing_dir()))
    needed: set[tuple[str, str]] = set()
    for argv in argvs.values():
        needed |= needed_types(argv)
    caps = capabilities(binary, needed_types=needed, cpus=True)
    features = load_features()
    runs, cannot = [], {}
    for name, argv in argvs.items():
        try:
            check_argv(argv, caps, features)
            runs.append(name)
        except HarnessError as e:
            cannot[name] = e.message
    detail = f"{len(runs)} of {len(argvs)} presets" + (f"; not: {', '.join(cannot)}" if cannot else "")
    return Finding("qemu-presets", not cannot, False, detail, fix=APT_QEMU if cannot else None,
                   data={"runs": runs, "cannot": cannot})


def _guest_tools() -> list[Finding]:
    from harness.image.host import BUSYBOX_PACKAGE, GUEST_PROGRAMS, busybox, find_host_program

    out = []
    missing_required: dict[str, str] = {}
    missing_optional: dict[str, str] = {}
    found: dict[str, str] = {}
    for guest_path, package, required in GUEST_PROGRAMS:
        name = PurePosixPath(guest_path).name
        host = find_host_program(name, package, required=False)
        if host is None:
            (missing_required if required else missing_optional)[name] = package
        else:
            found[name] = str(host)
    try:
        bb, _applets = busybox()
        found["busybox"] = str(bb)
    except HarnessError:
        missing_required["busybox"] = BUSYBOX_PACKAGE
    for tool, package in (("gcc", "gcc"), ("make", "make"), ("cpio", "cpio"), ("depmod", "kmod"), ("ssh", "openssh-client")):
        host = find_host_program(tool, package, required=False)
        if host is None:
            (missing_required if tool in ("gcc", "make") else missing_optional)[tool] = package
        else:
            found[tool] = str(host)
    pkgs = sorted(set(missing_required.values()))
    out.append(Finding("guest-tools", not missing_required, True,
                       "all present" if not missing_required else f"missing: {', '.join(sorted(missing_required))}",
                       fix=apt_install(*pkgs) if pkgs else None, data={"found": found, "missing": missing_required}))
    opt = sorted(set(missing_optional.values()))
    out.append(Finding("optional-tools", not missing_optional, False,
                       "all present" if not missing_optional else f"missing: {', '.join(sorted(missing_optional))} "
                       "(daxctl: pmem namespaces; bash-static: kernel selftests; ssh: harness ssh-config; "
                       "sftp-server: scp and sftp into the guest)",
                       fix=apt_install(*opt) if opt else None, data={"missing": missing_optional}))
    return out


def _cache() -> Finding:
    from harness.paths import cache_dir

    try:
        d = cache_dir()
        usage = shutil.disk_usage(d)
    except (HarnessError, OSError) as e:
        return Finding("cache", False, True, str(e), fix="set NUMA_HARNESS_CACHE to a writable directory")
    writable = os.access(d, os.W_OK)
    ok = writable and usage.free >= MIN_FREE_BYTES
    gib = usage.free / (1 << 30)
    detail = f"{d}: {gib:.1f} GiB free" + ("" if writable else ", not writable")
    fix = None
    if not writable:
        fix = f"make {d} writable, or set NUMA_HARNESS_CACHE to a writable directory"
    elif usage.free < MIN_FREE_BYTES:
        fix = f"free space there (a first run needs about {MIN_FREE_BYTES >> 30} GiB), or set NUMA_HARNESS_CACHE elsewhere"
    return Finding("cache", ok, True, detail, fix=fix, data={"path": str(d), "free_bytes": usage.free, "writable": writable})


def _default_kernel(findings: list[Finding]):  # -> Kernel | None
    from harness.kernel.debian import cached_default_kernel

    try:
        k = cached_default_kernel()
    except HarnessError:
        k = None
    if k is None:
        findings.append(Finding("default-kernel", False, False, "not cached yet: the first boot fetches it (about 100 MB)",
                                fix="harness kernel fetch (or just boot; or pass --kernel to use your own)"))
        return None
    findings.append(Finding("default-kernel", True, False, f"{k.origin} (cached)", data={"image": str(k.image)}))
    return k


def _kvm(binary: str | None, kernel, probe: bool) -> Finding:
    from harness.vm.accel import choose_accel, kvm_device_problem

    problem = kvm_device_problem()
    if problem:
        return Finding("kvm", False, False, f"{problem}; boots use TCG (slower, and fine)",
                       fix="on a VM host: load kvm_intel/kvm_amd and add yourself to the kvm group", data={"usable": False})
    if binary is None or kernel is None or not probe:
        why = "no QEMU" if binary is None else ("the default kernel is not cached" if kernel is None else "not probed")
        return Finding("kvm", True, False, f"/dev/kvm opens; whether a guest boots under it is unknown ({why})",
                       data={"usable": None})
    from harness.image.build import build_initramfs

    try:
        image = build_initramfs(kernel)
        choice = choose_accel("auto", binary, kernel.image, image.path)
    except HarnessError as e:
        return Finding("kvm", False, False, f"KVM could not be probed: {e.message}", fix=e.hint, data={"usable": None})
    works = choice.accel == "kvm"
    return Finding("kvm", works, False, choice.reason,
                   fix=None if works else "nothing to do: boots fall back to TCG (--accel tcg skips the probe)",
                   data={"usable": works})


def _plugin() -> Finding:
    eps = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value.split(":")[0] == "harness.plugin"]
    if eps:
        return Finding("pytest-plugin", True, False, f"registered as pytest11 entry point '{eps[0].name}'",
                       data={"entry_point": eps[0].name})
    return Finding("pytest-plugin", False, False, "no pytest11 entry point for harness.plugin in this environment",
                   fix="pip install numa-harness into the environment pytest runs from")
