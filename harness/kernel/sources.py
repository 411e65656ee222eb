"""The guest kernel: the distribution's packaged kernel, a user's bzImage, or a build tree.

Three ways to get a :class:`Kernel`:

* :func:`default_kernel` fetches Debian's packaged 6.12 kernel once, without root
  (``apt-get download`` + ``dpkg-deb -x``), into ``cache_dir()/kernels/<package>/``.
  Its modules are decompressed (``.ko.xz`` -> ``.ko``, busybox ``modprobe`` cannot read
  compressed modules) and indexed with host ``depmod -b`` at extraction time, so a
  later call only reads a small manifest.
* :func:`user_kernel` wraps a bzImage the user built (``--kernel``), with optional
  modules (a ``modules_install`` root) and ``.config``.
* :func:`kernel_from_tree` takes a kernel source or ``O=`` build directory and runs
  ``make modules_install`` into the cache.

:func:`check_config` tells the user, option by option, what a topology needs that the
kernel's ``.config`` lacks.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import KernelError
from harness.paths import cache_dir

Progress = Callable[[str], None] | None

#: Env var naming a Debian kernel package to use instead of the resolved default.
PACKAGE_ENV = "NUMA_HARNESS_KERNEL_PACKAGE"
#: The meta-package whose dependency is the newest 6.12 kernel on Debian 12.
BOOKWORM_META_PACKAGE = "linux-image-6.12-amd64"
#: On other Debian releases, the distribution's default kernel meta-package.
DEBIAN_META_PACKAGE = "linux-image-amd64"
#: Only plain amd64 flavour packages are accepted (not -rt, -cloud, -dbg, -unsigned).
KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(\d+\.\d+\.\d+[^\s]*)-amd64$")

MANIFEST = "numa-harness-kernel.json"
INSTALL_HINT = "run scripts/install-host-deps (it adds bookworm-backports), or pass --kernel PATH/bzImage"
APT_LISTS = Path("/var/lib/apt/lists")
CMD_TIMEOUT = 600
MAKE_TIMEOUT = 3600
COMPRESSED_MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel and what the harness knows about it."""

    image: Path  # bzImage / vmlinuz
    config: Path | None  # the kernel .config, if known
    modules_root: Path | None  # a modules_install root: contains lib/modules/<release>/
    release: str  # `uname -r` of that kernel
    origin: str  # human-readable provenance

    @property
    def modules_dir(self) -> Path | None:
        """``<modules_root>/lib/modules/<release>``, if there are modules."""
        if self.modules_root is None:
            return None
        return self.modules_root / "lib" / "modules" / self.release


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


# --------------------------------------------------------------------------- pure logic


def parse_config(text: str) -> dict[str, str]:
    """Parse a kernel ``.config``: ``{"CONFIG_CXL_BUS": "y", "CONFIG_LOCALVERSION": "-x"}``.

    ``# CONFIG_X is not set`` lines are left out (an absent key means "not set").
    String values lose their surrounding double quotes.
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("CONFIG_") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[name.strip()] = value
    return out


def _satisfies(have: str | None, want: str) -> bool:
    """'m' is satisfied by y or m; 'y' only by y; anything else must match exactly."""
    if have is None:
        return want == "n"
    if want == "m":
        return have in ("y", "m")
    return have == want


def missing_options(config: Mapping[str, str], required: Mapping[str, str]) -> list[tuple[str, str, str | None]]:
    """``[(option, wanted, have)]`` for each required option the config does not satisfy."""
    out = []
    for name, want in required.items():
        key = name if name.startswith("CONFIG_") else f"CONFIG_{name}"
        have = config.get(key)
        if not _satisfies(have, want):
            out.append((key, want, have))
    return out


def describe_missing(
    missing: Iterable[tuple[str, str, str | None]], why: Mapping[str, str] | None = None
) -> list[str]:
    """One line per missing option: ``CONFIG_CXL_MEM is not set (need m): <why>``."""
    why = why or {}
    lines = []
    for key, want, have in missing:
        reason = why.get(key) or why.get(key.removeprefix("CONFIG_"))
        state = "is not set" if have is None else f"is {have}"
        need = "y or m" if want == "m" else want
        line = f"{key} {state} (need {need})"
        if reason:
            line += f": {reason}"
        lines.append(line)
    return lines


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


# --------------------------------------------------------------------------- helpers (I/O)


def _run(argv: list[str], *, timeout: float = CMD_TIMEOUT, cwd: Path | None = None, what: str,
         env: Mapping[str, str] | None = None, hint: str | None = None) -> str:
    """Run a command; a failure or timeout becomes a KernelError naming ``what``."""
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None)
    except FileNotFoundError as e:
        raise KernelError(f"{what}: {argv[0]} not found", hint=INSTALL_HINT) from e
    except subprocess.TimeoutExpired as e:
        raise KernelError(f"{what}: `{' '.join(argv)}` did not finish in {timeout:.0f} s") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise KernelError(f"{what}: `{' '.join(argv)}` failed with exit code {proc.returncode}",
                          hint=hint, detail=tail)
    return proc.stdout


def _sbin_env() -> dict[str, str]:
    """The environment with /usr/sbin and /sbin on PATH (depmod lives there; users lack it)."""
    env = dict(os.environ)
    parts = env.get("PATH", "").split(os.pathsep)
    for extra in ("/usr/sbin", "/sbin"):
        if extra not in parts:
            parts.append(extra)
    env["PATH"] = os.pathsep.join(p for p in parts if p)
    return env


def _which(name: str) -> str | None:
    return shutil.which(name, path=_sbin_env()["PATH"])


def decompress_modules(modules_dir: Path, workers: int = 4) -> int:
    """Turn every ``.ko.xz`` / ``.ko.zst`` / ``.ko.gz`` under ``modules_dir`` into ``.ko``.

    Returns how many were decompressed. zstd needs the host ``zstd`` binary.
    """
    files = [p for p in modules_dir.rglob("*.ko.*") if p.name.endswith(COMPRESSED_MODULE_SUFFIXES)]
    zst = [p for p in files if p.name.endswith(".zst")]
    if zst:
        zstd = _which("zstd")
        if zstd is None:
            raise KernelError("modules are zstd-compressed but `zstd` is not installed",
                              hint="install the zstd package (scripts/install-host-deps)")
        for i in range(0, len(zst), 500):
            _run([zstd, "-d", "-q", "--rm", "-f", *map(str, zst[i:i + 500])], what="decompressing modules")

    def one(p: Path) -> None:
        opener = lzma.decompress if p.name.endswith(".xz") else gzip.decompress
        p.with_suffix("").write_bytes(opener(p.read_bytes()))
        p.unlink()

    others = [p for p in files if not p.name.endswith(".zst")]
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, others))
    return len(files)


def run_depmod(root: Path, release: str) -> None:
    """``depmod -b ROOT RELEASE``: regenerate modules.dep & co. for the tree under ROOT."""
    depmod = _which("depmod")
    if depmod is None:
        raise KernelError("`depmod` not found", hint="install the kmod package (scripts/install-host-deps)")
    _run([depmod, "-b", str(root), release], what="indexing kernel modules")


def _write_manifest(dest: Path, data: dict) -> None:
    (dest / MANIFEST).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _read_manifest(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _kernel_from_manifest(dest: Path, m: dict) -> Kernel | None:
    """The cached Kernel a manifest describes, or None if files went missing."""
    try:
        k = Kernel(
            image=dest / m["image"],
            config=dest / m["config"] if m.get("config") else None,
            modules_root=dest if m.get("modules") else None,
            release=m["release"],
            origin=m["origin"],
        )
    except KeyError:
        return None
    if not k.image.is_file() or (k.modules_dir is not None and not (k.modules_dir / "modules.dep").is_file()):
        return None
    return k


def _atomic_install(tmp: Path, dest: Path) -> None:
    """Rename a finished temp tree into place; if another process won the race, keep theirs."""
    try:
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except OSError:
        if _read_manifest(dest) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- default kernel


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
    if "debian" not in ids or _which("apt-get") is None or _which("dpkg-deb") is None:
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
    """Download and unpack one kernel package into ``dest`` atomically; write its manifest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{package}.", dir=dest.parent))
    try:
        _say(progress, f"downloading {package} (about 110 MB, once)")
        _run(["apt-get", "download", "-q", package], cwd=tmp, what=f"downloading {package}",
             hint=f"check the Debian mirror is reachable and `apt-get update` has run; {INSTALL_HINT}")
        debs = sorted(tmp.glob("*.deb"))
        if not debs:
            raise KernelError(f"apt-get download {package} produced no .deb", hint=INSTALL_HINT)
        _say(progress, f"unpacking {debs[0].name}")
        root = tmp / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)], what=f"unpacking {package}")
        for deb in debs:
            deb.unlink()
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise KernelError(f"{package} contains no boot/vmlinuz-*; is it a kernel image package?")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        mdir = root / "lib" / "modules" / release
        has_modules = mdir.is_dir()
        if has_modules:
            _say(progress, "decompressing kernel modules")
            decompress_modules(mdir)
            _say(progress, "indexing kernel modules (depmod)")
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
        }
        _write_manifest(tmp, manifest)
        _atomic_install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    k = _kernel_from_manifest(dest, _read_manifest(dest) or {})
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
    m = _read_manifest(dest)
    k = _kernel_from_manifest(dest, m) if m else None
    if k is None:
        k = _fetch_package(package, dest, progress)
    if p.get("package") != package or p.get("apt_lists") != stamp or p.get("override") != override:
        kdir.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"package": package, "apt_lists": stamp, "override": override}) + "\n")
        os.replace(tmp, pointer)
    return k


# --------------------------------------------------------------------------- user kernels


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
    m = _read_manifest(dest)
    k = _kernel_from_manifest(dest, m) if m else None
    if k is not None and k.release == release:
        return k
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tree.", dir=dest.parent))
    try:
        _say(progress, f"installing modules of {tree} (make modules_install)")
        _run(["make", "-C", str(tree), "-s", "modules_install", f"INSTALL_MOD_PATH={tmp}", "INSTALL_MOD_STRIP=1",
              "DEPMOD=true"], timeout=MAKE_TIMEOUT, what="make modules_install", env=_sbin_env())
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
        _write_manifest(tmp, {"release": release, "image": "boot/bzImage", "config": "boot/config",
                              "modules": True, "origin": f"tree: {tree}"})
        _atomic_install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Kernel(image=dest / "boot" / "bzImage", config=dest / "boot" / "config", modules_root=dest,
                  release=release, origin=f"tree: {tree}")


# --------------------------------------------------------------------------- config checks


def read_config(kernel: Kernel) -> dict[str, str]:
    """The kernel's .config as a dict; KernelError if the config is unknown or unreadable."""
    if kernel.config is None:
        raise KernelError(f"the .config of {kernel.origin} is unknown",
                          hint="pass --kernel-config PATH/.config")
    try:
        return parse_config(kernel.config.read_text(errors="replace"))
    except OSError as e:
        raise KernelError(f"cannot read kernel config {kernel.config}: {e.strerror}") from e


def check_config(kernel: Kernel, required: Mapping[str, str], why: Mapping[str, str] | None = None) -> None:
    """Raise KernelError naming every required option the kernel's config lacks.

    ``required`` maps option (with or without ``CONFIG_``) to ``y``, ``m`` (y or m) or a
    literal value; ``why`` maps option to the reason a topology needs it. A kernel whose
    config is unknown (``kernel.config is None``) is not checked: the caller may warn.
    """
    if kernel.config is None or not required:
        return
    missing = missing_options(read_config(kernel), required)
    if not missing:
        return
    lines = describe_missing(missing, why)
    first = lines[0] if len(lines) == 1 else f"{len(lines)} kernel config options are missing: " + "; ".join(lines)
    raise KernelError(
        f"{kernel.origin}: {first}",
        hint="enable them (e.g. `scripts/config -e OPTION` or `make menuconfig`) and rebuild, or use the default kernel",
        detail="\n".join(lines),
    )
