"""Building the guest image: collect the inputs, hash them, lay out the tree, write and cache it.

The image is a busybox initramfs with dropbear, numactl, the cxl CLI, the kernel's modules
(:mod:`harness.image.modules`), the host programs (:mod:`harness.image.host`), the guest files
(``harness/guest/files/``: ``init`` becomes ``/init``, every other file an executable in
:data:`~harness.guest.protocol.GUEST_BIN_DIR`) and the built guest programs (in
:data:`~harness.guest.protocol.GUEST_TESTS_DIR`). What the image promises the host (kernel
parameters, milestone lines, paths) is :mod:`harness.guest.protocol`.

Images are cached in ``cache_dir()/images/<key>.cpio`` keyed by a hash of every input group; a
manifest next to each image records the groups so a rebuild can say why, and the image's size
and a hash of its first and last MiB, checked before a cached image is used: a truncated or
damaged one is rebuilt, and the build says why (:mod:`harness.image.cache`). An image is built
under its cache lock (:func:`harness.cachefs.locked`) and renamed into place, so concurrent
first runs build it once; a cache that cannot be written is a one-line CacheError. sshd's host key is ``ssh-ed25519``,
generated once per host in ``cache_dir()/hostkey/`` and shared by every image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.cachefs import cache_errors, locked, write_atomic
from harness.errors import ImageError
from harness.guest.protocol import GUEST_BIN_DIR, GUEST_LIB_DIR, GUEST_TESTS_DIR, MILESTONE_INIT, guest_bin_name
from harness.image.cache import (
    COMPRESSION,
    KEEP_IMAGES,
    cached,
    image_fingerprint,
    image_path,
    prune,
    read_json,
    touch,
    write_image,
    write_json,
)
from harness.image.cpio import CpioWriter, Tree
from harness.image.host import Progress, build_guest_programs, busybox, host_key, host_programs, say
from harness.image.modules import (
    GUEST_MODULES,
    close_modules,
    filter_alias,
    module_name,
    parse_builtin,
    parse_modules_dep,
    render_modules_dep,
    strip_compression,
)
from harness.kernel.model import Kernel
from harness.paths import cache_dir
from harness.resources import guest_files_dir

log = logging.getLogger(__name__)

#: Bump when the image layout changes, so cached images are rebuilt.
FORMAT_VERSION = 3

GROUP_REASONS = {
    "format": "image format changed",
    "kernel": "kernel modules changed",
    "modules-list": "module list changed",
    "guest-files": "guest files changed",
    "programs": "host programs or libraries changed",
    "guest-tests": "guest tests changed",
    "hostkey": "ssh host key changed",
}


@dataclass(frozen=True)
class Image:
    """A built (or cached) initramfs."""

    path: Path  # the initramfs
    key: str  # hash of inputs
    rebuilt: bool
    reason: str  # "built: no cached image" / "rebuilt: guest files changed" / "cached"


# --------------------------------------------------------------------------- cache key (pure)


def digest(obj: object) -> str:
    """Stable short hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def image_key(groups: Mapping[str, str]) -> str:
    """The cache key of an image: a hash over every input group's digest."""
    return digest(dict(groups))


def rebuild_reason(previous: Mapping[str, str] | None, current: Mapping[str, str]) -> str:
    """Why an image is built: which input groups differ from the previous build."""
    if not previous:
        return "built: no cached image"
    changed = [GROUP_REASONS.get(g, f"{g} changed") for g in current if previous.get(g) != current[g]]
    if not changed:
        return "built: no cached image"
    return "rebuilt: " + ", ".join(changed)


def guest_files_digest(files: Mapping[str, bytes]) -> str:
    """The ``guest-files`` group: every guest file's image path and content (pure)."""
    return digest(sorted((g, hashlib.sha256(data).hexdigest()) for g, data in files.items()))


def guest_file_paths(names: list[str]) -> dict[str, str]:
    """file name in ``harness/guest/files/`` -> its path in the image (pure)."""
    return {n: "/init" if n == "init" else f"{GUEST_BIN_DIR}/{guest_bin_name(n)}" for n in names}


# --------------------------------------------------------------------------- inputs


def _stat_id(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass
class Inputs:
    """Everything an image is built from, with the digest of each input group."""

    guest_files: dict[str, bytes]  # guest path -> content (/init, GUEST_BIN_DIR/...)
    busybox: Path
    applets: list[str]
    programs: dict[str, Path]  # guest path -> host file
    libraries: dict[str, Path]  # guest path -> host file (resolved)
    kernel: Kernel
    mod_deps: dict[str, list[str]]
    mod_paths: list[str]
    mod_missing: list[str]
    guest_tests: dict[str, Path]  # relative path -> host file
    hostkey: Path
    groups: dict[str, str]


def read_guest_files() -> dict[str, bytes]:
    """Every file of ``harness/guest/files/`` by its path in the image (``init`` required)."""
    src = guest_files_dir()
    names = sorted(p.name for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    if "init" not in names:
        raise ImageError(f"the guest init script {src / 'init'} is missing (a broken install: reinstall numa-harness)")
    out = {}
    for name, guest in guest_file_paths(names).items():
        try:
            out[guest] = (src / name).read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read the guest file {src / name}: {e.strerror}") from e
    return out


def _kernel_modules(kernel: Kernel) -> tuple[dict[str, list[str]], list[str], list[str]]:
    mdir = kernel.modules_dir
    if mdir is None:
        return {}, [], list(GUEST_MODULES)
    try:
        deps = parse_modules_dep((mdir / "modules.dep").read_text())
    except OSError as e:
        raise ImageError(f"cannot read {mdir / 'modules.dep'}: {e.strerror}",
                         hint=f"run `depmod -b {kernel.modules_root} {kernel.release}`") from e
    try:
        builtin = parse_builtin((mdir / "modules.builtin").read_text())
    except OSError:
        builtin = set()
    paths, missing = close_modules(deps, GUEST_MODULES, builtin)
    for p in paths:
        if not (mdir / p).is_file():
            raise ImageError(f"module {mdir / p} listed in modules.dep does not exist",
                             hint=f"re-run `depmod -b {kernel.modules_root} {kernel.release}`")
    return deps, paths, missing


def collect_inputs(kernel: Kernel, progress: Progress = None) -> Inputs:
    """Find every input and compute the digest of each group (cheap: stats, not contents)."""
    files = read_guest_files()
    bb, applets = busybox()
    programs, libraries = host_programs()
    deps, mod_paths, mod_missing = _kernel_modules(kernel)
    tests = build_guest_programs(progress)
    hkey = host_key(progress)
    mdir = kernel.modules_dir
    groups = {
        "format": digest([FORMAT_VERSION, COMPRESSION]),
        "kernel": digest([kernel.release, mod_paths, [_stat_id(mdir / p) for p in mod_paths] if mdir else [],
                          _stat_id(mdir / "modules.dep") if mdir else None]),
        "modules-list": digest(list(GUEST_MODULES)),
        "guest-files": guest_files_digest(files),
        "programs": digest([_stat_id(bb), applets, sorted((g, _stat_id(h)) for g, h in programs.items()),
                            sorted((g, _stat_id(h)) for g, h in libraries.items())]),
        "guest-tests": digest(sorted((r, _file_sha(p), p.stat().st_mode & 0o111) for r, p in tests.items())),
        "hostkey": _file_sha(hkey),
    }
    return Inputs(files, bb, applets, programs, libraries, kernel, deps, mod_paths, mod_missing, tests,
                  hkey, groups)


# --------------------------------------------------------------------------- layout


ETC_FILES = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "/etc/group": "root:x:0:\ntty:x:5:\n",
    "/etc/shadow": "root:*:19000:0:99999:7:::\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "/etc/shells": "/bin/sh\n/bin/ash\n",
    "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "/etc/profile": (
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport HOME=/root\n"
        "PS1='\\h:\\w\\$ '\n"
    ),
}


def image_tree(inp: Inputs) -> Tree:
    """The full image layout from the collected inputs."""
    t = Tree()
    for d in ("/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/var/log", "/etc/dropbear",
              GUEST_LIB_DIR, GUEST_BIN_DIR, GUEST_TESTS_DIR, "/lib64"):
        t.dir(d)
    t.dir("/root", 0o700)
    t.dir("/root/.ssh", 0o700)
    t.dir("/tmp", 0o1777)
    t.symlink("/var/run", "/run")
    t.chardev("/dev/console", 5, 1, 0o600)
    t.chardev("/dev/null", 1, 3, 0o666)
    for guest, data in inp.guest_files.items():
        t.file(guest, data, 0o755)
    for name, text in ETC_FILES.items():
        t.file(name, text.encode(), 0o640 if name == "/etc/shadow" else 0o644)
    t.file("/etc/dropbear/dropbear_ed25519_host_key", inp.hostkey, 0o600)
    for guest, host in inp.programs.items():
        t.file(guest, host, 0o755)
    for guest, host in inp.libraries.items():
        t.file(guest, host, 0o755)
    t.file("/bin/busybox", inp.busybox, 0o755)
    for applet in inp.applets:
        path = "/" + applet
        if path != "/bin/busybox" and path not in t.entries:
            t.symlink(path, "/bin/busybox")
    for rel, host in inp.guest_tests.items():
        t.file(f"{GUEST_TESTS_DIR}/{rel}", host, 0o755 if host.stat().st_mode & 0o111 else 0o644)
    # On the PATH of SSH sessions (dropbear's built-in root PATH has /usr/local/bin), so a
    # person in `harness boot`'s shell can type `place --size 16 ...`; the host uses full paths.
    t.dir("/usr/local/bin")
    for full in [g for g in inp.guest_files if g.startswith(GUEST_BIN_DIR + "/")] + \
            [f"{GUEST_TESTS_DIR}/{rel}" for rel, h in inp.guest_tests.items() if "/" not in rel and h.stat().st_mode & 0o111]:
        link = f"/usr/local/bin/{full.rsplit('/', 1)[1]}"
        if link not in t.entries:
            t.symlink(link, full)
    _add_modules(t, inp)
    return t


def _add_modules(t: Tree, inp: Inputs) -> None:
    mdir = inp.kernel.modules_dir
    if mdir is None:
        return
    base = f"/lib/modules/{inp.kernel.release}"
    for p in inp.mod_paths:
        t.file(f"{base}/{strip_compression(p)}", mdir / p)
    names = {module_name(p) for p in inp.mod_paths}
    t.file(f"{base}/modules.dep", render_modules_dep(inp.mod_deps, inp.mod_paths).encode())
    t.file(f"{base}/modules.order", "".join(strip_compression(p) + "\n" for p in inp.mod_paths).encode())
    for extra in ("modules.builtin", "modules.builtin.modinfo"):
        if (mdir / extra).is_file():
            t.file(f"{base}/{extra}", mdir / extra)
    alias = mdir / "modules.alias"
    if alias.is_file():
        t.file(f"{base}/modules.alias", filter_alias(alias.read_text(errors="replace"), names).encode())


# --------------------------------------------------------------------------- writing and the cache


def build_initramfs(kernel: Kernel, progress: Progress = None) -> Image:
    """The guest initramfs for ``kernel``: cached if no input changed and the cached file is
    whole, else built (under the image's lock, atomically)."""
    inp = collect_inputs(kernel, progress)
    key = image_key(inp.groups)
    images = cache_dir() / "images"
    path = image_path(key)
    manifest_path = images / f"{key}.json"
    usable, _ = cached(path, manifest_path)
    if usable:  # no lock and no write needed: a read-only cache with a good image still serves
        log.info("guest image for kernel %s: cached (%s)", kernel.release, path)
        touch(path)
        return Image(path=path, key=key, rebuilt=False, reason="cached")
    with cache_errors(f"creating {images}"):
        images.mkdir(parents=True, exist_ok=True)
    with locked(path):
        usable, problem = cached(path, manifest_path)  # another process may have built it meanwhile
        if usable:
            touch(path)
            return Image(path=path, key=key, rebuilt=False, reason="cached")
        last = images / "last.json"
        if problem:
            reason = f"rebuilt: {problem}"
        else:
            previous = read_json(last)
            reason = rebuild_reason(previous.get("groups") if previous else None, inp.groups)
        if inp.mod_missing and kernel.modules_dir is not None:
            say(progress, f"modules not in kernel {kernel.release} (skipped): {', '.join(inp.mod_missing)}")
        say(progress, f"building guest image ({reason})")
        t0 = time.monotonic()
        write_image(image_tree(inp), path)
        manifest = {"key": key, "groups": inp.groups, "kernel": kernel.release, "origin": kernel.origin,
                    "modules": [module_name(p) for p in inp.mod_paths], "missing_modules": inp.mod_missing,
                    "image": image_fingerprint(path)}
        write_json(manifest_path, manifest)
        write_json(last, manifest)
        say(progress, f"guest image {path.name}: {path.stat().st_size // 1024} KiB in {time.monotonic() - t0:.1f} s")
        with cache_errors(f"pruning {images}"):
            prune(images, KEEP_IMAGES)
    return Image(path=path, key=key, rebuilt=True, reason=reason)


# --------------------------------------------------------------------------- bare image


BARE_INIT = f"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "{MILESTONE_INIT}"
/bin/busybox poweroff -f
""".encode()


def build_bare_initramfs(progress: Progress = None) -> Path:
    """A tiny initramfs (static busybox + an /init that prints the first milestone and powers
    off): the floor that a harness boot is benchmarked against. Cached."""
    bb, _ = busybox()
    key = digest([FORMAT_VERSION, _stat_id(bb), hashlib.sha256(BARE_INIT).hexdigest()])
    images = cache_dir() / "images"
    path = images / f"bare-{key}.cpio"
    t = Tree()
    for d in ("/proc", "/sys", "/dev"):
        t.dir(d)
    t.chardev("/dev/console", 5, 1)
    t.file("/init", BARE_INIT, 0o755)
    t.file("/bin/busybox", bb, 0o755)
    t.symlink("/bin/sh", "busybox")
    buf = io.BytesIO()
    t.write(CpioWriter(buf))
    data = buf.getvalue()  # a few MiB: compared with the cached file, so a truncated one is rewritten

    def whole() -> bool:
        try:
            return path.stat().st_size == len(data) and path.read_bytes() == data
        except OSError:
            return False

    if whole():
        return path
    with cache_errors(f"creating {images}"):
        images.mkdir(parents=True, exist_ok=True)
    with locked(path):
        if not whole():
            say(progress, "building the bare-boot image")
            write_atomic(path, data)
            with cache_errors(f"writing {path}"):
                os.chmod(path, 0o644)
    return path
