"""Kernels the user built: a bzImage (``--kernel``, with ``--modules``/``--kernel-config``) or a build tree.

:func:`kernel_from_tree` takes a kernel source or ``O=`` build directory and
runs ``make modules_install`` into the cache (under a lock, atomically).
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

from harness.cachefs import locked
from harness.errors import KernelError
from harness.kernel.config import parse_config
from harness.kernel.model import Kernel, Progress, say
from harness.kernel.tools import (
    MAKE_TIMEOUT,
    decompress_modules,
    install_tree,
    kernel_from_manifest,
    read_manifest,
    run_depmod,
    run_tool,
    sbin_env,
    staging_tree,
    write_manifest,
)
from harness.paths import cache_dir


def parse_bzimage_release(data: bytes) -> str:
    """The ``uname -r`` string from a bzImage's header (boot protocol >= 2.00).

    ``data`` must hold at least the first few KiB of the image. Raises ValueError if it is
    not a bzImage or has no version string.
    """
    if len(data) < 0x210 or data[0x202:0x206] != b"HdrS":
        raise ValueError("no 'HdrS' boot header at offset 0x202: not an x86 bzImage")
    (offset,) = struct.unpack_from("<H", data, 0x20E)
    if offset == 0:
        raise ValueError("bzImage header has no kernel_version string")
    start = offset + 0x200
    end = data.find(b"\0", start, start + 512)
    if start >= len(data) or end < 0:
        raise ValueError("bzImage kernel_version string is out of range")
    text = data[start:end].decode("ascii", "replace").strip()
    if not text:
        raise ValueError("bzImage kernel_version string is empty")
    return text.split()[0]


def read_bzimage_release(image: Path) -> str:
    """``uname -r`` of a bzImage file; KernelError if it is not a bzImage."""
    try:
        with open(image, "rb") as f:
            head = f.read(64 * 1024)
    except OSError as e:
        raise KernelError(f"cannot read kernel image {image}: {e.strerror}") from e
    try:
        return parse_bzimage_release(head)
    except ValueError as e:
        raise KernelError(f"{image} is not a usable kernel image: {e}",
                          hint="pass arch/x86/boot/bzImage from an x86_64 kernel build") from e


def _normalize_modules(modules: Path, release: str | None) -> tuple[Path, str | None]:
    """Accept a modules_install root, its lib/modules, or lib/modules/<release>; return (root, release)."""
    modules = modules.resolve()
    if (modules / "modules.dep").is_file() or (modules / "modules.order").is_file():
        return modules.parent.parent.parent, release or modules.name
    base = modules / "lib" / "modules" if (modules / "lib" / "modules").is_dir() else modules
    if release and (base / release).is_dir():
        return base.parent.parent, release
    subdirs = [d for d in base.iterdir() if d.is_dir()] if base.is_dir() else []
    if release is None and len(subdirs) == 1:
        return base.parent.parent, subdirs[0].name
    found = ", ".join(d.name for d in subdirs) or "none"
    raise KernelError(
        f"no modules for kernel {release or '?'} under {modules} (found: {found})",
        hint="pass the INSTALL_MOD_PATH of `make modules_install` (it contains lib/modules/<release>/)",
    )


def _guess_config(image: Path, release: str) -> Path | None:
    """A .config next to the image: config-<release>, or the build tree's .config."""
    candidates = [image.parent / f"config-{release}", image.parent / ".config"]
    if image.parent.name == release:  # Debian's split packages: lib/modules/<release>/{vmlinuz,config}
        candidates.append(image.parent / "config")
    # arch/x86/boot/bzImage -> tree/.config
    if image.parent.name == "boot" and image.parent.parent.parent.name == "arch":
        candidates.append(image.parent.parent.parent.parent / ".config")
    return next((c for c in candidates if c.is_file()), None)


def user_kernel(image: Path, modules: Path | None = None, config: Path | None = None) -> Kernel:
    """A kernel the user built. ``modules`` is a modules_install root (or its lib/modules/<rel>)."""
    image = Path(image).expanduser()
    if not image.is_file():
        raise KernelError(f"kernel image {image} does not exist",
                          hint="build it with `make -j$(nproc) bzImage modules` and pass arch/x86/boot/bzImage")
    release = read_bzimage_release(image)
    modules_root = None
    if modules is not None:
        modules = Path(modules).expanduser()
        if not modules.exists():
            raise KernelError(f"modules directory {modules} does not exist",
                              hint="run `make modules_install INSTALL_MOD_PATH=DIR` and pass DIR")
        modules_root, mrel = _normalize_modules(modules, release)
        if mrel != release:
            raise KernelError(f"modules in {modules} are for {mrel}, but {image} is {release}",
                              hint="pass the modules built with this kernel")
        mdir = modules_root / "lib" / "modules" / release
        if not (mdir / "modules.dep").is_file():
            raise KernelError(f"{mdir} has no modules.dep", hint=f"run `depmod -b {modules_root} {release}`")
    if config is not None:
        config = Path(config).expanduser()
        if not config.is_file():
            raise KernelError(f"kernel config {config} does not exist")
    else:
        config = _guess_config(image, release)
    return Kernel(image=image.resolve(), config=config.resolve() if config else None,
                  modules_root=modules_root, release=release, origin=f"user: {image}")


def _tree_release(tree: Path, image: Path) -> str:
    rel_file = tree / "include" / "config" / "kernel.release"
    if rel_file.is_file():
        text = rel_file.read_text().strip()
        if text:
            return text
    return read_bzimage_release(image)


def tree_cache_key(image: Path) -> str:
    """Identity of a tree build: the bzImage's path, size and mtime."""
    st = image.stat()
    return hashlib.sha256(f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def kernel_from_tree(tree: Path, progress: Progress = None) -> Kernel:
    """A kernel from a source tree or ``O=`` build directory, its modules installed into the cache."""
    tree = Path(tree).expanduser().resolve()
    image = tree / "arch" / "x86" / "boot" / "bzImage"
    if not image.is_file():
        raise KernelError(f"{image} does not exist",
                          hint=f"build it first with `make -C {tree} -j$(nproc) bzImage modules`")
    config = tree / ".config"
    if not config.is_file():
        raise KernelError(f"{tree} has no .config", hint="pass the kernel's source or O= build directory")
    release = _tree_release(tree, image)
    cfg = parse_config(config.read_text(errors="replace"))
    if cfg.get("CONFIG_MODULES") != "y":
        return Kernel(image=image, config=config, modules_root=None, release=release, origin=f"tree: {tree}")
    dest = cache_dir() / "kernels" / f"tree-{tree_cache_key(image)}"
    m = read_manifest(dest)
    k = kernel_from_manifest(dest, m) if m else None
    if k is not None and k.release == release:
        return k
    with locked(dest):
        m = read_manifest(dest)
        k = kernel_from_manifest(dest, m) if m else None
        if k is not None and k.release == release:
            return k
        return _install_tree_modules(tree, image, config, release, dest, progress)


def _install_tree_modules(tree: Path, image: Path, config: Path, release: str, dest: Path,
                          progress: Progress) -> Kernel:
    with staging_tree(dest, ".tree.", f"installing the modules of {tree}") as tmp:
        say(progress, f"installing modules of {tree} (make modules_install)")
        run_tool(["make", "-C", str(tree), "-s", "modules_install", f"INSTALL_MOD_PATH={tmp}", "INSTALL_MOD_STRIP=1",
              "DEPMOD=true"], timeout=MAKE_TIMEOUT, what="make modules_install", env=sbin_env())
        mdir = tmp / "lib" / "modules" / release
        if not mdir.is_dir():
            raise KernelError(f"make modules_install did not create {mdir.relative_to(tmp)}",
                              hint=f"is {tree} the build directory of {image}? rebuild with `make bzImage modules`")
        for link in ("build", "source"):
            if (mdir / link).is_symlink():
                (mdir / link).unlink()
        decompress_modules(mdir)
        run_depmod(tmp, release)
        # The image and config stay in the tree; the manifest points at a copy of the image
        # only to validate the cache entry.
        (tmp / "boot").mkdir()
        shutil.copy2(image, tmp / "boot" / "bzImage")
        shutil.copy2(config, tmp / "boot" / "config")
        write_manifest(tmp, {"release": release, "image": "boot/bzImage", "config": "boot/config",
                             "modules": True, "origin": f"tree: {tree}",
                             "image_size": (tmp / "boot" / "bzImage").stat().st_size})
        install_tree(tmp, dest)
    return Kernel(image=dest / "boot" / "bzImage", config=dest / "boot" / "config", modules_root=dest,
                  release=release, origin=f"tree: {tree}")
