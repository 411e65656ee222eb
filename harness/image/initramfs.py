"""The guest image: a busybox initramfs with dropbear, numactl, the cxl CLI and kernel modules.

Built as an ordinary user: the cpio "newc" archive is written here in Python (root-owned
entries, a /dev/console node, deterministic timestamps), so no fakeroot or loop mount is
needed. Images are cached in ``cache_dir()/images/<key>.cpio`` keyed by a hash of every
input; a manifest next to each image records the input groups so a rebuild can say why.

Kernel command line contract (read by the guest's /init, ``harness/guest/files/init``)
---------------------------------------------------------------------------------
All parameters are optional; :func:`guest_cmdline` builds them.

``harness.modules=a,b,c`` (:data:`CMDLINE_MODULES`)
    Modules to ``modprobe``, in order. Only modules in :data:`GUEST_MODULES` (and their
    dependencies) are in the image; a module built into the kernel counts as loaded.
``harness.sshkey=KEY`` (:data:`CMDLINE_SSHKEY`)
    root's authorized key: the bare base64 body of an ``ssh-ed25519`` key, or
    ``TYPE:BASE64`` for other key types. No comment, no spaces (see :func:`sshkey_param`).
``harness.ip=10.0.2.15/24`` (:data:`CMDLINE_IP`), ``harness.gw=10.0.2.2`` (:data:`CMDLINE_GW`)
    Address of the first ethernet interface and the default route (QEMU user-mode
    networking defaults; ``harness.gw=none`` for no route). ``virtio_net`` is loaded by
    /init when no ethernet interface exists yet.
``harness.hostname=NAME`` (:data:`CMDLINE_HOSTNAME`)
    The guest's hostname (default ``numa-guest``).
``harness.init=poweroff|shell`` (:data:`CMDLINE_INIT`)
    ``poweroff``: print the first milestone and power off (bare-boot floor).
    ``shell``: no network or sshd, just the console shell.

The guest prints one console line per milestone (:data:`MILESTONES`), each prefixed
``numa-harness: ``, in this order: ``init running``, ``modprobe FAILED <name>`` (per failure),
``modules loaded (N)``, ``network up <addr>`` (or ``network FAILED <why>``),
``sshd ready port 22`` (or ``sshd FAILED <why>``), ``console shell``. "sshd ready" is printed
only once dropbear is listening, so a host may connect as soon as it sees it (QEMU's user
networking accepts host connections earlier than that and resets them).

sshd is dropbear: public-key logins for root only, host key ``ssh-ed25519`` (generated once
per host in ``cache_dir()/hostkey/`` and shared by every image). Sessions get
``PATH=/usr/sbin:/usr/bin:/sbin:/bin`` and ``HOME=/root``. There is no sftp server: copy files
with ``cat > FILE`` over an exec channel. Compiled guest tests are in
:data:`GUEST_TESTS_IMAGE_DIR`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from harness.errors import ImageError
from harness.kernel.sources import Kernel
from harness.paths import cache_dir
from harness.resources import guest_files_dir, guest_programs_dir

Progress = Callable[[str], None] | None

# --------------------------------------------------------------------------- contract

CMDLINE_MODULES = "harness.modules"
CMDLINE_SSHKEY = "harness.sshkey"
CMDLINE_IP = "harness.ip"
CMDLINE_GW = "harness.gw"
CMDLINE_HOSTNAME = "harness.hostname"
CMDLINE_INIT = "harness.init"

MILESTONE_PREFIX = "numa-harness: "
MILESTONE_INIT = "numa-harness: init running"
MILESTONE_MODULES = "numa-harness: modules loaded"  # followed by " (N)"
MILESTONE_MODPROBE_FAILED = "numa-harness: modprobe FAILED"  # followed by " NAME"
MILESTONE_NETWORK = "numa-harness: network up"  # followed by " ADDR"
MILESTONE_NETWORK_FAILED = "numa-harness: network FAILED"
MILESTONE_SSHD = "numa-harness: sshd ready port 22"
MILESTONE_SSHD_FAILED = "numa-harness: sshd FAILED"
MILESTONE_SHELL = "numa-harness: console shell"
MILESTONES = (MILESTONE_INIT, MILESTONE_MODULES, MILESTONE_NETWORK, MILESTONE_SSHD, MILESTONE_SHELL)

GUEST_SSH_PORT = 22
GUEST_TESTS_IMAGE_DIR = "/usr/lib/numa-harness/guest-tests"

#: Every module a topology may need. Closed over modules.dep at build time; names the
#: kernel lacks, or has built in, are skipped.
GUEST_MODULES: tuple[str, ...] = (
    # virtio networking (sshd)
    "virtio_net", "net_failover", "failover",
    # CXL
    "cxl_core", "cxl_acpi", "cxl_pci", "cxl_mem", "cxl_pmem", "cxl_port",
    # DAX
    "dax", "device_dax", "kmem", "dax_hmem", "dax_cxl", "dax_pmem",
    # NVDIMM / pmem
    "libnvdimm", "nd_pmem", "nd_btt", "nd_e820", "nd_virtio", "virtio_pmem",
    # memory devices
    "virtio_mem", "virtio_balloon",
    # host file sharing (optional)
    "9p", "9pnet", "9pnet_virtio", "virtiofs", "fuse",
)

#: Host programs copied into the image: (guest path, Debian package, required).
GUEST_PROGRAMS: tuple[tuple[str, str, bool], ...] = (
    ("/usr/sbin/dropbear", "dropbear-bin", True),
    ("/usr/bin/numactl", "numactl", True),
    ("/usr/bin/numastat", "numactl", True),
    ("/usr/bin/memhog", "numactl", True),
    ("/usr/bin/migratepages", "numactl", True),
    ("/usr/bin/cxl", "ndctl", True),
    ("/usr/bin/ndctl", "ndctl", True),
    ("/usr/bin/daxctl", "daxctl", False),
    ("/bin/bash-static", "bash-static", False),
)
BUSYBOX_PACKAGE = "busybox-static"
HOST_DEPS_HINT = "run scripts/install-host-deps"
HOST_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

#: Bump when the image layout changes, so cached images are rebuilt.
FORMAT_VERSION = 1
#: Uncompressed cpio: QEMU loads it with fw_cfg DMA, and the guest skips decompression.
COMPRESSION = "none"
KEEP_IMAGES = 8
CMD_TIMEOUT = 120
MAKE_TIMEOUT = 900

INIT_SCRIPT = guest_files_dir() / "init"

GROUP_REASONS = {
    "format": "image format changed",
    "kernel": "kernel modules changed",
    "modules-list": "module list changed",
    "init": "init script changed",
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
    reason: str  # "built: no cached image" / "rebuilt: init script changed" / "cached"


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


# --------------------------------------------------------------------------- cmdline helpers (pure)


def sshkey_param(public_key: str) -> str:
    """The ``harness.sshkey`` value for an OpenSSH public key line ("ssh-ed25519 AAAA... comment")."""
    parts = public_key.split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) < 2:
        raise ValueError("empty public key")
    ktype, body = parts[0], parts[1]
    return body if ktype == "ssh-ed25519" else f"{ktype}:{body}"


def guest_cmdline(
    *,
    modules: Sequence[str] = (),
    sshkey: str | None = None,
    ip: str | None = None,
    gw: str | None = None,
    hostname: str | None = None,
    init: str | None = None,
) -> list[str]:
    """The ``harness.*`` kernel parameters for these settings (``sshkey``: an OpenSSH public key line)."""
    out = []
    if modules:
        out.append(f"{CMDLINE_MODULES}={','.join(modules)}")
    if sshkey:
        out.append(f"{CMDLINE_SSHKEY}={sshkey_param(sshkey)}")
    for name, value in ((CMDLINE_IP, ip), (CMDLINE_GW, gw), (CMDLINE_HOSTNAME, hostname), (CMDLINE_INIT, init)):
        if value:
            if any(c.isspace() for c in value):
                raise ValueError(f"{name} must not contain spaces: {value!r}")
            out.append(f"{name}={value}")
    return out


# --------------------------------------------------------------------------- modules (pure)


def module_name(path: str) -> str:
    """``kernel/drivers/net/virtio-net.ko.xz`` -> ``virtio_net``."""
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def strip_compression(path: str) -> str:
    """``x.ko.xz`` -> ``x.ko`` (the image holds decompressed modules)."""
    return re.sub(r"\.ko\.(xz|zst|gz)$", ".ko", path)


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> ``{relative module path: [dependency paths]}`` (order kept)."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    return deps


def parse_builtin(text: str) -> set[str]:
    """modules.builtin -> the set of module names built into the kernel."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def close_modules(
    deps: Mapping[str, Sequence[str]], wanted: Iterable[str], builtin: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Close ``wanted`` module names over ``deps``.

    Returns (module paths to include, dependencies first; names neither in ``deps`` nor
    built in). Built-in names are silently satisfied.
    """
    by_name = {module_name(p): p for p in deps}
    builtin = {b.replace("-", "_") for b in builtin}
    out: list[str] = []
    seen: set[str] = set()
    missing: list[str] = []

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in deps.get(path, ()):
            visit(dep)
        out.append(path)

    for name in wanted:
        norm = name.replace("-", "_")
        if norm in by_name:
            visit(by_name[norm])
        elif norm not in builtin:
            missing.append(name)
    return out, missing


def render_modules_dep(deps: Mapping[str, Sequence[str]], included: Sequence[str]) -> str:
    """The image's modules.dep: only included modules, decompressed names."""
    return "".join(
        f"{strip_compression(p)}: {' '.join(strip_compression(d) for d in deps.get(p, ()))}".rstrip() + "\n"
        for p in included
    )


def filter_alias(text: str, names: set[str]) -> str:
    """modules.alias lines (``alias PATTERN module``) for the included module names."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and parts[2].replace("-", "_") in names:
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def parse_ldd(text: str) -> list[str]:
    """Absolute library paths (and the loader) from ``ldd`` output."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"\S+\s+=>\s+(/\S+)", line)
        if m:
            out.append(m.group(1))
            continue
        m = re.match(r"(/\S+)\s+\(0x", line)
        if m:
            out.append(m.group(1))
    return out


# --------------------------------------------------------------------------- cpio newc (pure)


class CpioWriter:
    """A cpio "newc" (SVR4, no CRC) archive writer: root-owned, deterministic entries."""

    MAGIC = b"070701"

    def __init__(self, out: BinaryIO, mtime: int = 0):
        self._out = out
        self._ino = 1
        self._mtime = mtime
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/") or "."
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name}")
        self._names.add(name)
        bname = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, rdev[0], rdev[1], len(bname), 0)
        self._ino += 1
        header = self.MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + bname)
        self._out.write(b"\0" * (-(len(header) + len(bname)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> None:
        """Write the trailer (the archive is then complete)."""
        self._ino = 0
        self._entry("TRAILER!!!", 0)


# --------------------------------------------------------------------------- image tree (pure)


@dataclass
class Tree:
    """The image's contents before writing: path -> entry. Parents are created implicitly."""

    entries: dict[str, tuple] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        p = PurePosixPath(path).parent
        while str(p) not in ("/", "."):
            self.entries.setdefault(str(p), ("dir", 0o755))
            p = p.parent

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path] = ("dir", mode)

    def file(self, path: str, source: Path | bytes, mode: int = 0o644) -> None:
        self._parents(path)
        self.entries[path] = ("file", source, mode)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries.setdefault(path, ("link", target))

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._parents(path)
        self.entries[path] = ("chr", major, minor, mode)

    def write(self, writer: CpioWriter) -> None:
        """Emit every entry, sorted so parents precede children."""
        for path in sorted(self.entries, key=lambda p: PurePosixPath(p).parts):
            e = self.entries[path]
            if e[0] == "dir":
                writer.directory(path, e[1])
            elif e[0] == "file":
                data = e[1] if isinstance(e[1], bytes) else _read_source(e[1])
                writer.file(path, data, e[2])
            elif e[0] == "link":
                writer.symlink(path, e[1])
            else:
                writer.chardev(path, e[1], e[2], e[3])
        writer.finish()


def _read_source(src: Path) -> bytes:
    """File content; compressed kernel modules are decompressed on the way."""
    data = src.read_bytes()
    if src.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if src.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if src.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-d", "-c", str(src)], capture_output=True, check=True,
                              timeout=CMD_TIMEOUT).stdout
    return data


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


# --------------------------------------------------------------------------- host I/O


def _missing_tool(name: str, package: str) -> ImageError:
    return ImageError(f"host program `{name}` not found (Debian package {package})",
                      hint=f"{HOST_DEPS_HINT}, or `apt-get install {package}`")


def find_host_program(name: str, package: str, required: bool = True) -> Path | None:
    """A host binary by name, in the sbin and bin directories (users' PATH may lack sbin)."""
    path = os.environ.get("PATH", "").split(os.pathsep) + list(HOST_BIN_DIRS)
    found = shutil.which(name, path=os.pathsep.join(p for p in path if p))
    if found is None and required:
        raise _missing_tool(name, package)
    return Path(found) if found else None


def _run(argv: list[str], what: str, timeout: float = CMD_TIMEOUT, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise ImageError(f"{what}: `{' '.join(argv)}` did not finish in {timeout:.0f} s") from e
    except OSError as e:
        raise ImageError(f"{what}: cannot run {argv[0]}: {e.strerror}") from e


def shared_libraries(binary: Path) -> list[str]:
    """The shared libraries (and loader) a dynamic binary needs, by ``ldd``; [] if static."""
    with open(binary, "rb") as f:
        head = f.read(4096)
    if not head.startswith(b"\x7fELF") or b"ld-linux" not in _interp(binary, head):
        return []
    proc = _run(["ldd", str(binary)], f"listing the libraries of {binary}")
    if proc.returncode != 0:
        raise ImageError(f"ldd {binary} failed", hint="is libc-bin installed?", detail=proc.stderr.strip())
    if "not found" in proc.stdout:
        bad = [line.strip() for line in proc.stdout.splitlines() if "not found" in line]
        raise ImageError(f"{binary} needs libraries that are not installed: {'; '.join(bad)}",
                         hint=f"reinstall the package providing {binary.name} ({HOST_DEPS_HINT})")
    return parse_ldd(proc.stdout)


def _interp(binary: Path, head: bytes) -> bytes:
    """The ELF PT_INTERP string (empty for static binaries)."""
    import struct

    if len(head) < 64 or head[4] != 2:  # 64-bit only
        return b""
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    with open(binary, "rb") as f:
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ph = f.read(phentsize)
            if len(ph) < 56:
                break
            p_type, _, p_offset = struct.unpack_from("<IIQ", ph, 0)
            p_filesz, = struct.unpack_from("<Q", ph, 0x20)
            if p_type == 3:
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0")
    return b""


def _stat_id(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass
class Inputs:
    """Everything an image is built from, with the digest of each input group."""

    init: bytes
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


def _busybox() -> tuple[Path, list[str]]:
    bb: Path | None = None
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file():
            bb = p
            break
    if bb is None:
        bb = find_host_program("busybox", BUSYBOX_PACKAGE)
    assert bb is not None  # find_host_program raises when a required program is missing
    if shared_libraries(bb):
        raise ImageError(f"{bb} is not statically linked", hint=f"install {BUSYBOX_PACKAGE} ({HOST_DEPS_HINT})")
    proc = _run([str(bb), "--list-full"], "listing busybox applets")
    if proc.returncode != 0:
        raise ImageError(f"`{bb} --list-full` failed", hint=f"install {BUSYBOX_PACKAGE}")
    return bb, sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def _programs() -> tuple[dict[str, Path], dict[str, Path]]:
    programs: dict[str, Path] = {}
    libraries: dict[str, Path] = {}
    for guest_path, package, required in GUEST_PROGRAMS:
        host = find_host_program(PurePosixPath(guest_path).name, package, required)
        if host is None:
            continue
        programs[guest_path] = host
        for lib in shared_libraries(host):
            libraries.setdefault(lib, Path(os.path.realpath(lib)))
    return programs, libraries


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


def _guest_tests(progress: Progress) -> dict[str, Path]:
    """Build the guest programs (if their source folder has a Makefile) and list the outputs.

    The sources ship inside the package (possibly read-only, in site-packages), so
    the build writes into the cache: ``make -C SRC OUT=cache_dir()/guest-programs``.
    """
    src = guest_programs_dir()
    if not (src / "Makefile").is_file():
        return {}
    make = find_host_program("make", "make")
    build = cache_dir() / "guest-programs"
    build.mkdir(parents=True, exist_ok=True)
    _say(progress, "building guest programs")
    proc = _run([str(make), "-s", "-C", str(src), f"OUT={build}"], "building guest programs",
                timeout=MAKE_TIMEOUT)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-20:])
        raise ImageError(f"`make -C {src} OUT={build}` failed", hint="fix the guest program build", detail=tail)
    return {str(p.relative_to(build)): p for p in sorted(build.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def host_key(progress: Progress = None) -> Path:
    """The dropbear ed25519 host key shared by every image (generated once, ~instant)."""
    d = cache_dir() / "hostkey"
    key = d / "dropbear_ed25519_host_key"
    if key.is_file() and key.stat().st_size > 0:
        return key
    d.mkdir(parents=True, exist_ok=True)
    keygen = find_host_program("dropbearkey", "dropbear-bin")
    tmp = d / f".tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    _say(progress, "generating the guest ssh host key")
    proc = _run([str(keygen), "-t", "ed25519", "-f", str(tmp)], "generating the ssh host key")
    if proc.returncode != 0 or not tmp.is_file():
        raise ImageError("dropbearkey failed to generate a host key", detail=proc.stderr.strip())
    os.replace(tmp, key)
    return key


def collect_inputs(kernel: Kernel, progress: Progress = None) -> Inputs:
    """Find every input and compute the digest of each group (cheap: stats, not contents)."""
    try:
        init = INIT_SCRIPT.read_bytes()
    except OSError as e:
        raise ImageError(f"the guest init script {INIT_SCRIPT} is missing: {e.strerror}") from e
    busybox, applets = _busybox()
    programs, libraries = _programs()
    deps, mod_paths, mod_missing = _kernel_modules(kernel)
    tests = _guest_tests(progress)
    hkey = host_key(progress)
    mdir = kernel.modules_dir
    groups = {
        "format": digest([FORMAT_VERSION, COMPRESSION]),
        "kernel": digest([kernel.release, mod_paths, [_stat_id(mdir / p) for p in mod_paths] if mdir else [],
                          _stat_id(mdir / "modules.dep") if mdir else None]),
        "modules-list": digest(list(GUEST_MODULES)),
        "init": hashlib.sha256(init).hexdigest()[:16],
        "programs": digest([_stat_id(busybox), applets, sorted((g, _stat_id(h)) for g, h in programs.items()),
                            sorted((g, _stat_id(h)) for g, h in libraries.items())]),
        "guest-tests": digest(sorted((r, _file_sha(p), p.stat().st_mode & 0o111) for r, p in tests.items())),
        "hostkey": _file_sha(hkey),
    }
    return Inputs(init, busybox, applets, programs, libraries, kernel, deps, mod_paths, mod_missing, tests,
                  hkey, groups)


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
              "/usr/lib/numa-harness", GUEST_TESTS_IMAGE_DIR, "/lib64"):
        t.dir(d)
    t.dir("/root", 0o700)
    t.dir("/root/.ssh", 0o700)
    t.dir("/tmp", 0o1777)
    t.symlink("/var/run", "/run")
    t.chardev("/dev/console", 5, 1, 0o600)
    t.chardev("/dev/null", 1, 3, 0o666)
    t.file("/init", inp.init, 0o755)
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
        t.file(f"{GUEST_TESTS_IMAGE_DIR}/{rel}", host, 0o755 if host.stat().st_mode & 0o111 else 0o644)
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


def _write_image(tree: Tree, dest: Path) -> None:
    """Write the cpio (compressed per COMPRESSION) to ``dest`` atomically."""
    fd, tmpname = tempfile.mkstemp(prefix=".tmp-", suffix=dest.suffix, dir=dest.parent)
    tmp = Path(tmpname)
    try:
        with os.fdopen(fd, "wb") as raw:
            if COMPRESSION == "gzip":
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                    tree.write(CpioWriter(gz))  # type: ignore[arg-type]
            else:
                buf = io.BufferedWriter(raw, 1 << 20)
                tree.write(CpioWriter(buf))
                buf.flush()
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _image_path(key: str) -> Path:
    return cache_dir() / "images" / (f"{key}.cpio.gz" if COMPRESSION == "gzip" else f"{key}.cpio")


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _prune(images: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used images (and their manifests)."""
    built = sorted((p for p in images.glob("*.cpio*") if not p.name.startswith((".", "bare-"))),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in built[keep:]:
        old.unlink(missing_ok=True)
        (images / (old.name.split(".")[0] + ".json")).unlink(missing_ok=True)


def build_initramfs(kernel: Kernel, progress: Progress = None) -> Image:
    """The guest initramfs for ``kernel``: cached if no input changed, else built (atomically)."""
    inp = collect_inputs(kernel, progress)
    key = image_key(inp.groups)
    images = cache_dir() / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = _image_path(key)
    last = images / "last.json"
    if path.is_file() and _read_json(images / f"{key}.json") is not None:
        os.utime(path)  # most recently used: survives pruning
        return Image(path=path, key=key, rebuilt=False, reason="cached")
    previous = _read_json(last)
    reason = rebuild_reason(previous.get("groups") if previous else None, inp.groups)
    if inp.mod_missing and kernel.modules_dir is not None:
        _say(progress, f"modules not in kernel {kernel.release} (skipped): {', '.join(inp.mod_missing)}")
    _say(progress, f"building guest image ({reason})")
    t0 = time.monotonic()
    _write_image(image_tree(inp), path)
    manifest = {"key": key, "groups": inp.groups, "kernel": kernel.release, "origin": kernel.origin,
                "modules": [module_name(p) for p in inp.mod_paths], "missing_modules": inp.mod_missing}
    _write_json(images / f"{key}.json", manifest)
    _write_json(last, manifest)
    _say(progress, f"guest image {path.name}: {path.stat().st_size // 1024} KiB in {time.monotonic() - t0:.1f} s")
    _prune(images, KEEP_IMAGES)
    return Image(path=path, key=key, rebuilt=True, reason=reason)


# --------------------------------------------------------------------------- bare image


BARE_INIT = b"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "numa-harness: init running"
/bin/busybox poweroff -f
"""


def build_bare_initramfs(progress: Progress = None) -> Path:
    """A tiny initramfs (static busybox + an /init that prints the first milestone and powers
    off): the floor that a harness boot is benchmarked against. Cached."""
    bb, _ = _busybox()
    key = digest([FORMAT_VERSION, _stat_id(bb), hashlib.sha256(BARE_INIT).hexdigest()])
    images = cache_dir() / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = images / f"bare-{key}.cpio"
    if path.is_file():
        return path
    _say(progress, "building the bare-boot image")
    t = Tree()
    for d in ("/proc", "/sys", "/dev"):
        t.dir(d)
    t.chardev("/dev/console", 5, 1)
    t.file("/init", BARE_INIT, 0o755)
    t.file("/bin/busybox", bb, 0o755)
    t.symlink("/bin/sh", "busybox")
    fd, tmpname = tempfile.mkstemp(prefix=".tmp-bare-", dir=images)
    try:
        with os.fdopen(fd, "wb") as f:
            t.write(CpioWriter(f))
        os.chmod(tmpname, 0o644)
        os.replace(tmpname, path)
    except BaseException:
        Path(tmpname).unlink(missing_ok=True)
        raise
    return path
