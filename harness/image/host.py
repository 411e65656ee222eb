"""What the image takes from the host: programs and their libraries, busybox, the ssh host key,
and the guest programs built with the host's ``make``.

Every function here touches the host (PATH lookups, ``ldd``, ``dropbearkey``, ``make``);
:func:`parse_ldd` is the one pure parser. A missing host tool is an :class:`ImageError` naming
the Debian package that provides it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from harness.cachefs import CACHE_HINT, cache_errors, locked
from harness.errors import CacheError, ImageError
from harness.hints import DOCTOR, install
from harness.paths import cache_dir
from harness.resources import guest_programs_dir

Progress = Callable[[str], None] | None
log = logging.getLogger(__name__)

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
    # dropbear runs it for SFTP, which OpenSSH's scp (9.0 and later) and sftp speak
    ("/usr/lib/sftp-server", "openssh-sftp-server", False),
)
BUSYBOX_PACKAGE = "busybox-static"
HOST_DEPS_HINT = DOCTOR
HOST_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/lib/openssh")
CMD_TIMEOUT = 120
MAKE_TIMEOUT = 900


def say(progress: Progress, msg: str) -> None:
    """Tell the user (``progress``) and the log."""
    log.info("%s", msg)
    if progress is not None:
        progress(msg)


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


def _missing_tool(name: str, package: str) -> ImageError:
    return ImageError(f"host program `{name}` not found (Debian package {package})",
                      hint=install(package))


def find_host_program(name: str, package: str, required: bool = True) -> Path | None:
    """A host binary by name, in the sbin and bin directories (users' PATH may lack sbin)."""
    path = os.environ.get("PATH", "").split(os.pathsep) + list(HOST_BIN_DIRS)
    found = shutil.which(name, path=os.pathsep.join(p for p in path if p))
    if found is None and required:
        raise _missing_tool(name, package)
    return Path(found) if found else None


def run_tool(argv: list[str], what: str, timeout: float = CMD_TIMEOUT,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a host tool, text output captured; an ImageError if it cannot run or hangs."""
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
    proc = run_tool(["ldd", str(binary)], f"listing the libraries of {binary}")
    if proc.returncode != 0:
        raise ImageError(f"ldd {binary} failed", hint="is libc-bin installed?", detail=proc.stderr.strip())
    if "not found" in proc.stdout:
        bad = [line.strip() for line in proc.stdout.splitlines() if "not found" in line]
        raise ImageError(f"{binary} needs libraries that are not installed: {'; '.join(bad)}",
                         hint=f"reinstall the package providing {binary.name} ({HOST_DEPS_HINT})")
    return parse_ldd(proc.stdout)


def _interp(binary: Path, head: bytes) -> bytes:
    """The ELF PT_INTERP string (empty for static binaries)."""
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


def busybox() -> tuple[Path, list[str]]:
    """The host's static busybox and its applets (``bin/sh``, ``usr/bin/awk``, ...)."""
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
    proc = run_tool([str(bb), "--list-full"], "listing busybox applets")
    if proc.returncode != 0:
        raise ImageError(f"`{bb} --list-full` failed", hint=f"install {BUSYBOX_PACKAGE}")
    return bb, sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def host_programs() -> tuple[dict[str, Path], dict[str, Path]]:
    """(guest path -> host program, guest path -> host library) for :data:`GUEST_PROGRAMS`."""
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


def build_guest_programs(progress: Progress = None) -> dict[str, Path]:
    """Build the guest programs (if their source folder has a Makefile) and list the outputs.

    The sources ship inside the package (possibly read-only, in site-packages), so
    the build writes into the cache: ``make -C SRC OUT=cache_dir()/guest-programs/<hash>``,
    the hash over every source file's name and contents, so two checkouts (or two
    versions) sharing a cache never share, or overwrite, each other's programs.
    """
    src = guest_programs_dir()
    if not (src / "Makefile").is_file():
        return {}
    make = find_host_program("make", "make")
    sources = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    key = hashlib.sha256(json.dumps([(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sources])
                         .encode()).hexdigest()[:16]
    build = cache_dir() / "guest-programs" / key
    programs = makefile_programs(src / "Makefile")

    def built() -> dict[str, Path]:
        return {str(p.relative_to(build)): p for p in sorted(build.rglob("*"))
                if p.is_file() and not p.name.startswith(".")}

    have = built() if build.is_dir() else {}
    if programs and set(programs) <= set(have):
        return have  # the folder is keyed by the sources: complete means current (no make, no write)
    with cache_errors(f"creating {build}"):
        build.mkdir(parents=True, exist_ok=True)
    with locked(build):  # concurrent first runs: one make, the others wait and use its output
        say(progress, "building guest programs")
        proc = run_tool([str(make), "-s", "-C", str(src), f"OUT={build}"], "building guest programs",
                        timeout=MAKE_TIMEOUT)
        if proc.returncode != 0:
            out = proc.stderr + proc.stdout
            for said, reason in (("No space left", "no space left on the device"),
                                 ("Read-only file system", "read-only file system"),
                                 ("Disk quota exceeded", "disk quota exceeded")):
                if said in out:  # the compiler or mv could not write OUT: the cache, not the sources
                    raise CacheError(f"cannot write the cache while building the guest programs: {build}: {reason}",
                                     hint=CACHE_HINT)
            tail = "\n".join(out.strip().splitlines()[-20:])
            raise ImageError(f"`make -C {src} OUT={build}` failed", hint="fix the guest program build", detail=tail)
        return built()


def makefile_programs(makefile: Path) -> list[str]:
    """The names in the guest programs Makefile's ``PROGS :=`` line (empty if it has none)."""
    try:
        text = makefile.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        name, sep, value = line.partition(":=")
        if sep and name.strip() == "PROGS":
            return value.split()
    return []


def host_key(progress: Progress = None) -> Path:
    """The dropbear ed25519 host key shared by every image (generated once, ~instant)."""
    d = cache_dir() / "hostkey"
    key = d / "dropbear_ed25519_host_key"
    if key.is_file() and key.stat().st_size > 0:
        return key
    keygen = find_host_program("dropbearkey", "dropbear-bin")
    with cache_errors(f"creating {d}"):
        d.mkdir(parents=True, exist_ok=True)
    with locked(key):  # one key per host, even when the first runs start together
        if key.is_file() and key.stat().st_size > 0:
            return key
        tmp = d / f".tmp-{os.getpid()}"
        with cache_errors(f"generating {key}"):
            tmp.unlink(missing_ok=True)
            say(progress, "generating the guest ssh host key")
            proc = run_tool([str(keygen), "-t", "ed25519", "-f", str(tmp)], "generating the ssh host key")
            if proc.returncode != 0 or not tmp.is_file():
                raise ImageError("dropbearkey failed to generate a host key", detail=proc.stderr.strip())
            os.replace(tmp, key)
    return key


def host_public_key() -> str | None:
    """The guest's SSH host key as an OpenSSH public key line (``ssh-ed25519 AAAA...``), for a
    known_hosts entry; None if there is no host key yet or dropbearkey cannot read it.
    Kept next to the key once read."""
    key = cache_dir() / "hostkey" / "dropbear_ed25519_host_key"
    pub = key.with_name(key.name + ".pub")
    try:
        if pub.is_file() and pub.stat().st_mtime >= key.stat().st_mtime:
            return pub.read_text().strip() or None
    except OSError:
        return None
    if not key.is_file():
        return None
    keygen = find_host_program("dropbearkey", "dropbear-bin", required=False)
    if keygen is None:
        return None
    proc = run_tool([str(keygen), "-y", "-f", str(key)], "reading the ssh host key")
    line = next((ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("ssh-")), None)
    if proc.returncode != 0 or line is None:
        return None
    line = " ".join(line.split()[:2])  # type and key; the comment names the host that made it
    try:
        tmp = pub.with_name(f".{pub.name}.{os.getpid()}")
        tmp.write_text(line + "\n")
        os.replace(tmp, pub)
    except OSError:
        pass
    return line
