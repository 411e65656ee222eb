"""The default kernel: Debian's packaged 6.12 kernel, fetched once without root into the cache.

``apt-get download`` + ``dpkg-deb -x`` into ``cache_dir()/kernels/<package>/``.
Its modules are decompressed (``.ko.xz`` -> ``.ko``, busybox ``modprobe``
cannot read compressed modules) and indexed with host ``depmod -b`` at
extraction time, so a later call only reads a small manifest. Fetching is
done under a lock: concurrent first runs fetch once and share the result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from harness.cachefs import locked, write_atomic
from harness.errors import CacheError, KernelError
from harness.kernel.model import Kernel, Progress, say
from harness.kernel.tools import (
    INSTALL_HINT,
    decompress_modules,
    install_tree,
    kernel_from_manifest,
    read_manifest,
    run_depmod,
    run_tool,
    staging_tree,
    which,
    write_manifest,
)
from harness.paths import cache_dir

#: Env var naming a Debian kernel package to use instead of the resolved default.
PACKAGE_ENV = "NUMA_HARNESS_KERNEL_PACKAGE"
#: The meta-package whose dependency is the newest 6.12 kernel on Debian 12.
BOOKWORM_META_PACKAGE = "linux-image-6.12-amd64"
#: On other Debian releases, the distribution's default kernel meta-package.
DEBIAN_META_PACKAGE = "linux-image-amd64"
#: Only plain amd64 flavour packages are accepted (not -rt, -cloud, -dbg, -unsigned).
KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(\d+\.\d+\.\d+[^\s]*)-amd64$")
APT_LISTS = Path("/var/lib/apt/lists")


def parse_apt_depends(text: str) -> list[str]:
    """Package names from ``apt-cache depends PKG`` output (``Depends:`` lines only)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*\|?Depends:\s*(\S+)", line)
        if m and not m.group(1).startswith("<"):
            out.append(m.group(1))
    return out


def pick_kernel_package(candidates: Iterable[str]) -> str | None:
    """The plain ``-amd64`` kernel image among a meta-package's dependencies."""
    for name in candidates:
        m = KERNEL_PACKAGE_RE.match(name)
        if m and not re.search(r"-(rt|cloud)-amd64$", name) and "dbg" not in name:
            return name
    return None


def os_release(text: str) -> dict[str, str]:
    """Parse /etc/os-release."""
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip().strip('"')
    return out


def _apt_lists_stamp() -> int | None:
    """A cheap identity of the apt package lists (changes when ``apt-get update`` fetches)."""
    try:
        return APT_LISTS.stat().st_mtime_ns
    except OSError:
        return None


def _meta_package() -> str:
    """The meta-package to resolve on this host, or KernelError if it is not Debian."""
    try:
        info = os_release(Path("/etc/os-release").read_text())
    except OSError:
        info = {}
    ids = {info.get("ID", "")} | set(info.get("ID_LIKE", "").split())
    if "debian" not in ids or which("apt-get") is None or which("dpkg-deb") is None:
        raise KernelError(
            "no default kernel on this system: the packaged kernel is only fetched on Debian",
            hint="pass --kernel PATH/bzImage (and --modules / --kernel-config), or --kernel-tree KSRC",
        )
    if info.get("VERSION_CODENAME") == "bookworm":
        return BOOKWORM_META_PACKAGE
    return DEBIAN_META_PACKAGE


def resolve_kernel_package() -> str:
    """The Debian kernel package to use: $NUMA_HARNESS_KERNEL_PACKAGE or the meta-package's target."""
    override = os.environ.get(PACKAGE_ENV)
    if override:
        return override.strip()
    meta = _meta_package()
    if not any(APT_LISTS.glob("*_Packages*")):
        raise KernelError("apt has no package lists, so the default kernel cannot be found",
                          hint=INSTALL_HINT)
    try:
        proc = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"cannot ask apt about {meta}: {e}", hint=INSTALL_HINT) from e
    pkg = pick_kernel_package(parse_apt_depends(proc.stdout)) if proc.returncode == 0 else None
    if pkg is None:
        raise KernelError(f"apt does not know the kernel meta-package {meta} (bookworm-backports missing?)",
                          hint=INSTALL_HINT, detail=(proc.stderr or proc.stdout).strip() or None)
    return pkg


def _fetch_package(package: str, dest: Path, progress: Progress) -> Kernel:
    """Download and unpack one kernel package into ``dest`` atomically; write its manifest.

    The caller holds ``dest``'s lock.
    """
    with staging_tree(dest, f".{package}.", f"fetching {package}") as tmp:
        say(progress, f"downloading {package} (about 110 MB, once)")
        run_tool(["apt-get", "download", "-q", package], cwd=tmp, what=f"downloading {package}",
             hint=f"check the Debian mirror is reachable and `apt-get update` has run; {INSTALL_HINT}")
        debs = sorted(tmp.glob("*.deb"))
        if not debs:
            raise KernelError(f"apt-get download {package} produced no .deb", hint=INSTALL_HINT)
        say(progress, f"unpacking {debs[0].name}")
        root = tmp / "root"
        run_tool(["dpkg-deb", "-x", str(debs[0]), str(root)], what=f"unpacking {package}")
        for deb in debs:
            deb.unlink()
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise KernelError(f"{package} contains no boot/vmlinuz-*; is it a kernel image package?")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        mdir = root / "lib" / "modules" / release
        has_modules = mdir.is_dir()
        if has_modules:
            say(progress, "decompressing kernel modules")
            decompress_modules(mdir)
            say(progress, "indexing kernel modules (depmod)")
            run_depmod(root, release)
        shutil.rmtree(root / "usr", ignore_errors=True)  # docs only
        config = root / "boot" / f"config-{release}"
        has_config = config.is_file()
        # Flatten: dest/{boot,lib} so modules_root == dest.
        for child in root.iterdir():
            os.rename(child, tmp / child.name)
        root.rmdir()
        manifest = {
            "package": package,
            "release": release,
            "image": f"boot/{vmlinuz[0].name}",
            "config": f"boot/{config.name}" if has_config else None,
            "modules": has_modules,
            "origin": f"debian package {package}",
            "image_size": (tmp / "boot" / vmlinuz[0].name).stat().st_size,
        }
        write_manifest(tmp, manifest)
        install_tree(tmp, dest)
    k = kernel_from_manifest(dest, read_manifest(dest) or {})
    if k is None:
        raise KernelError(f"the unpacked kernel in {dest} is incomplete", hint=f"remove {dest} and retry")
    return k


def default_kernel(progress: Progress = None) -> Kernel:
    """Debian's packaged kernel, fetched and unpacked once into the cache (no root needed).

    A second call reads only a pointer file and a manifest: no apt call, unless apt's
    package lists changed since (then the meta-package is resolved again, so security
    updates are picked up).
    """
    kdir = cache_dir() / "kernels"
    pointer = kdir / "default.json"
    override = os.environ.get(PACKAGE_ENV, "").strip() or None
    stamp = _apt_lists_stamp()
    try:
        p = json.loads(pointer.read_text())
    except (OSError, ValueError):
        p = {}
    package = None
    if p.get("package") and p.get("apt_lists") == stamp and p.get("override") == override:
        package = p["package"]
    if package is None:
        package = resolve_kernel_package()
    dest = kdir / package
    k = _cached(dest)
    if k is None:
        with locked(dest):  # concurrent first runs: one fetches, the others wait and use it
            k = _cached(dest) or _fetch_package(package, dest, progress)
    if p.get("package") != package or p.get("apt_lists") != stamp or p.get("override") != override:
        try:
            write_atomic(pointer, json.dumps({"package": package, "apt_lists": stamp, "override": override}) + "\n")
        except CacheError:
            pass  # only a shortcut for the next run
    return k


def _cached(dest: Path) -> Kernel | None:
    m = read_manifest(dest)
    return kernel_from_manifest(dest, m) if m else None
