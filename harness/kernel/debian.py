"""Debian's packaged kernels, fetched once without root into the cache.

The default kernel is Debian 12's 6.12 (bookworm-backports), found through the
system's own apt lists. ``debian:X.Y`` names Debian's newest X.Y kernel: one the
system's sources do not carry (7.2 lives in Debian unstable) is looked up in a
private apt index of the ``sid`` suite of the same Debian mirror the system
uses (``cache_dir()/apt/sid``; the system's sources and lists are never
touched). Newer kernels are split into ``linux-binary-*`` (the image),
``linux-modules-*`` and ``linux-base-*`` (config, System.map) with the
``usr/lib/modules/<release>/vmlinuz`` layout; older ones are one
``linux-image-*`` with ``boot/vmlinuz-*``. Either way the packages are
unpacked into ``cache_dir()/kernels/<package>/`` in one layout (``boot/``,
``lib/modules/<release>/``), the modules decompressed (``.ko.xz`` -> ``.ko``,
busybox ``modprobe`` cannot read compressed modules) and indexed with host
``depmod -b``, so a later call only reads a small manifest. Fetching is done
under a lock: concurrent first runs fetch once and share the result.

The pure parts (which packages make a kernel, where an unpacked one keeps its
files, the mirror in the system's sources) take text and return values.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.cachefs import cache_errors, locked, write_atomic
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

log = logging.getLogger(__name__)

#: Env var naming a Debian kernel package to use instead of the resolved default.
PACKAGE_ENV = "NUMA_HARNESS_KERNEL_PACKAGE"
#: The meta-package whose dependency is the newest 6.12 kernel on Debian 12.
BOOKWORM_META_PACKAGE = "linux-image-6.12-amd64"
#: On other Debian releases, the distribution's default kernel meta-package.
DEBIAN_META_PACKAGE = "linux-image-amd64"
#: Only plain amd64 flavour packages are accepted (not -rt, -cloud, -dbg, -unsigned).
KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(\d+\.\d+\.\d+[^\s]*)-amd64$")
APT_LISTS = Path("/var/lib/apt/lists")
#: ``--kernel debian:X.Y``: Debian's newest X.Y kernel.
DEBIAN_NAME_RE = re.compile(r"^debian:(\d+\.\d+)$")
#: The suite newer kernels come from (Debian unstable), through a private apt index.
NEWER_SUITE = "sid"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SPLIT_PACKAGES = ("binary", "modules", "base")  # image; modules; config and System.map


@dataclass(frozen=True)
class Layout:
    """Where an unpacked kernel package keeps its files (paths relative to its root)."""

    release: str               # ``uname -r``
    image: str
    config: str | None
    modules: str | None        # the lib/modules/<release> directory
    system_map: str | None


@dataclass(frozen=True)
class KernelPackages:
    """The packages that make up one Debian kernel release."""

    release: str               # ``uname -r``, e.g. 7.2.13+deb14-amd64
    packages: tuple[str, ...]  # image first


def parse_debian_name(text: str) -> str | None:
    """``debian:7.2`` -> ``"7.2"``; None if ``text`` is not such a name (a path, say)."""
    m = DEBIAN_NAME_RE.match(text.strip())
    return m.group(1) if m else None


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


def _version_key(abi: str) -> tuple:
    """Sort key of a kernel ABI name (``7.2.13+deb14``): numbers compared as numbers."""
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", abi))


def pick_series_packages(names: Iterable[str], series: str) -> KernelPackages | None:
    """The newest plain ``-amd64`` kernel of ``series`` (``7.2``) among an index's package names.

    A split kernel (``linux-binary-R``, with ``linux-modules-R`` and ``linux-base-R`` when the
    index has them) is preferred to a single ``linux-image-R``; ``-rt``, ``-cloud`` and ``-dbg``
    flavours are never picked.
    """
    names = set(names)
    pat = re.compile(r"^linux-(binary|image)-(" + re.escape(series) + r"(?:\.\d+)?(?:[+~-][^\s]*?)?)-amd64$")
    found: dict[str, set[str]] = {}
    for n in names:
        m = pat.match(n)
        if m and not re.search(r"-(rt|cloud)$", m.group(2)):
            found.setdefault(m.group(2), set()).add(m.group(1))
    if not found:
        return None
    abi = max(found, key=_version_key)
    if "binary" in found[abi]:
        pkgs = tuple(f"linux-{kind}-{abi}-amd64" for kind in SPLIT_PACKAGES
                     if f"linux-{kind}-{abi}-amd64" in names)
    else:
        pkgs = (f"linux-image-{abi}-amd64",)
    return KernelPackages(release=f"{abi}-amd64", packages=pkgs)


def series_in_index(names: Iterable[str]) -> list[str]:
    """The kernel series (``7.2``) an index has plain ``-amd64`` image packages of, oldest first."""
    found = {m.group(1) for n in names
             if (m := re.match(r"^linux-(?:binary|image)-(\d+\.\d+)[.+~-][^\s]*-amd64$", n))
             and not re.search(r"-(rt|cloud)-amd64$", n)}
    return sorted(found, key=_version_key)


def debian_mirror(sources: Mapping[str, str], codename: str) -> str | None:
    """The URI of the system's main Debian source: the ``deb`` entry whose suites include
    ``codename``, in one-line (``*.list``) or deb822 (``*.sources``) files {name: text}."""
    for name, text in sorted(sources.items()):
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.strip()
                if ("deb" in fields.get("types", "").split() and codename in fields.get("suites", "").split()
                        and fields.get("enabled", "yes").lower() != "no" and fields.get("uris")):
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                    return words[1]
    return None


def newer_suite_sources(uri: str, keyring: Path | None) -> str:
    """A deb822 sources file for the suite newer kernels come from, on mirror ``uri``."""
    signed = f"Signed-By: {keyring}\n" if keyring else ""
    return f"Types: deb\nURIs: {uri}\nSuites: {NEWER_SUITE}\nComponents: main\n{signed}"


def apt_index_options(index: Path) -> list[str]:
    """``apt-get``/``apt-cache`` options that use only the index under ``index`` (sources, lists,
    cache), never the system's sources, lists, package cache or installed-package state."""
    return ["-o", f"Dir::Etc::SourceList={index / 'sources.sources'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={index / 'lists'}", "-o", f"Dir::Cache={index / 'cache'}",
            "-o", "Dir::State::status=/dev/null", "-o", "Acquire::Languages=none"]


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


def find_layout(paths: Iterable[str]) -> Layout:
    """Where an unpacked kernel package keeps its files, from the paths it holds (relative to the root).

    Two layouts: ``boot/vmlinuz-R`` and ``boot/config-R`` beside ``lib/modules/R/``
    (Debian 12's ``linux-image-*``), or ``usr/lib/modules/R/{vmlinuz,config}`` beside the
    modules (Debian's split packages since 7.x). Raises KernelError if there is no image.
    """
    files = {x.removeprefix("./").rstrip("/") for x in paths}
    for f in sorted(files):
        m = re.fullmatch(r"boot/vmlinuz-(.+)", f)
        if m:
            rel = m.group(1)
            config = f"boot/config-{rel}"
            mods = next((d for d in (f"lib/modules/{rel}", f"usr/lib/modules/{rel}")
                         if any(x.startswith(d + "/") for x in files)), None)
            return Layout(rel, f, config if config in files else None, mods, None)
        m = re.fullmatch(r"((?:usr/)?lib/modules/([^/]+))/vmlinuz", f)
        if m:
            mdir, rel = m.group(1), m.group(2)
            system_map = f"{mdir}/System.map"
            return Layout(rel, f, f"{mdir}/config" if f"{mdir}/config" in files else None,
                          mdir if any(x.startswith(mdir + "/kernel/") for x in files) else None,
                          system_map if system_map in files else None)
    raise KernelError("the kernel packages contain no boot/vmlinuz-* nor lib/modules/*/vmlinuz: "
                      "are they kernel image packages?")


def _unpacked_files(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()]


def _fetch_packages(packages: Sequence[str], dest: Path, progress: Progress,
                    apt_options: Sequence[str] = (), hint: str = INSTALL_HINT) -> Kernel:
    """Download and unpack the packages of one kernel into ``dest`` atomically; write its manifest.

    The caller holds ``dest``'s lock. ``apt_options`` point ``apt-get`` at another index.
    """
    first = packages[0]
    with staging_tree(dest, f".{first}.", f"fetching {first}") as tmp:
        say(progress, f"downloading {' '.join(packages)} (about 110 MB, once)")
        run_tool(["apt-get", *apt_options, "download", "-q", *packages], cwd=tmp,
                 what=f"downloading {' '.join(packages)}",
                 hint=f"check the Debian mirror is reachable and its package index is current; {hint}")
        debs = sorted(tmp.glob("*.deb"))
        if not debs:
            raise KernelError(f"apt-get download {first} produced no .deb", hint=hint)
        root = tmp / "root"
        for deb in debs:
            say(progress, f"unpacking {deb.name}")
            run_tool(["dpkg-deb", "-x", str(deb), str(root)], what=f"unpacking {deb.name}")
            deb.unlink()
        layout = find_layout(_unpacked_files(root))
        release = layout.release
        # One layout in the cache whatever the package's: boot/{vmlinuz,config,System.map}-R, lib/modules/R.
        (tmp / "boot").mkdir()
        image = tmp / "boot" / f"vmlinuz-{release}"
        os.rename(root / layout.image, image)
        config = tmp / "boot" / f"config-{release}"
        if layout.config:
            os.rename(root / layout.config, config)
        if layout.system_map:
            os.rename(root / layout.system_map, tmp / "boot" / f"System.map-{release}")
        if layout.modules:
            (tmp / "lib" / "modules").mkdir(parents=True)
            os.rename(root / layout.modules, tmp / "lib" / "modules" / release)
            say(progress, "decompressing kernel modules")
            decompress_modules(tmp / "lib" / "modules" / release)
            say(progress, "indexing kernel modules (depmod)")
            run_depmod(tmp, release)
        shutil.rmtree(root, ignore_errors=True)  # docs, lintian overrides
        manifest = {
            "package": first,
            "packages": list(packages),
            "release": release,
            "image": f"boot/{image.name}",
            "config": f"boot/{config.name}" if layout.config else None,
            "modules": layout.modules is not None,
            "origin": f"debian package{'s' if len(packages) > 1 else ''} {' '.join(packages)}",
            "image_size": image.stat().st_size,
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
        log.info("default kernel: apt names %s", package)
    dest = kdir / package
    k = _cached(dest)
    log.info("default kernel %s: %s", package, f"cached ({dest})" if k else "not cached, fetching")
    if k is None:
        with locked(dest):  # concurrent first runs: one fetches, the others wait and use it
            k = _cached(dest) or _fetch_packages([package], dest, progress)
    if p.get("package") != package or p.get("apt_lists") != stamp or p.get("override") != override:
        try:
            write_atomic(pointer, json.dumps({"package": package, "apt_lists": stamp, "override": override}) + "\n")
        except CacheError:
            pass  # only a shortcut for the next run
    return k


def cached_default_kernel() -> Kernel | None:
    """The default kernel if the cache has it, as the last run chose it: no apt call, no fetch
    (for a one-line summary; :func:`default_kernel` decides what a boot uses)."""
    try:
        p = json.loads((cache_dir() / "kernels" / "default.json").read_text())
    except (OSError, ValueError, CacheError):
        return None
    package = p.get("package") if isinstance(p, dict) else None
    return _cached(cache_dir() / "kernels" / package) if isinstance(package, str) and package else None


def _cached(dest: Path) -> Kernel | None:
    m = read_manifest(dest)
    return kernel_from_manifest(dest, m) if m else None


def _system_sources() -> dict[str, str]:
    out = {}
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if f.suffix in (".list", ".sources") or f.name == "sources.list":
            try:
                out[f.name] = f.read_text()
            except OSError:
                pass
    return out


def _index_dir() -> Path:
    return cache_dir() / "apt" / NEWER_SUITE


def _update_index(index: Path, progress: Progress) -> None:
    """(Re)write the private index's sources file and ``apt-get update`` it. Caller holds its lock."""
    _meta_package()  # a Debian host with apt, else a one-line error
    info = os_release(Path("/etc/os-release").read_text())
    uri = debian_mirror(_system_sources(), info.get("VERSION_CODENAME", ""))
    if uri is None:
        raise KernelError(f"cannot find the Debian mirror in /etc/apt/sources* (no `deb` entry for "
                          f"{info.get('VERSION_CODENAME') or 'this release'})",
                          hint="pass --kernel PATH/vmlinuz --modules DIR --kernel-config FILE instead")
    with cache_errors("preparing the apt index of newer kernels"):
        (index / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (index / "cache").mkdir(parents=True, exist_ok=True)
        (index / "sources.sources").write_text(
            newer_suite_sources(uri, DEBIAN_KEYRING if DEBIAN_KEYRING.is_file() else None))
    say(progress, f"updating the package index of Debian {NEWER_SUITE} ({uri}, kept in {index})")
    run_tool(["apt-get", *apt_index_options(index), "update", "-q"], what=f"updating the {NEWER_SUITE} package index",
             hint="check the Debian mirror is reachable")


def _index_names(index: Path) -> list[str]:
    out = run_tool(["apt-cache", *apt_index_options(index), "pkgnames", "linux-"],
                   what=f"listing the {NEWER_SUITE} kernels")
    return out.split()


def _series_of(release: str) -> str:
    return ".".join(release.split(".")[:2])


def debian_kernel(series: str, progress: Progress = None, refresh: bool = False) -> Kernel:
    """Debian's newest ``series`` kernel (``"7.2"``), fetched and unpacked once into the cache.

    The default kernel when it is of that series (6.12 on Debian 12). Otherwise a later call
    reads only a pointer file and a manifest; ``refresh`` (``harness kernel fetch``) updates
    the private index first, so a newer release of the series is fetched when there is one.
    """
    default = _default_series()
    if default == series:
        return default_kernel(progress)
    kdir = cache_dir() / "kernels"
    pointer = kdir / f"debian-{series}.json"
    if not refresh:
        try:
            k = _cached(kdir / json.loads(pointer.read_text())["package"])
        except (OSError, ValueError, KeyError, TypeError):
            k = None
        if k is not None:
            return k
    index = _index_dir()
    with locked(index):
        if refresh or not any((index / "lists").glob("*_Packages*")):
            _update_index(index, progress)
        names = _index_names(index)
        pick = pick_series_packages(names, series)
        if pick is None and not refresh:
            _update_index(index, progress)  # an old index may predate the series
            names = _index_names(index)
            pick = pick_series_packages(names, series)
    if pick is None:
        has = ", ".join(series_in_index(names)) or "none"
        raise KernelError(f"Debian {NEWER_SUITE} has no {series} kernel for amd64 (it has: {has}"
                          + (f"; the default kernel here is {default})" if default else ")"),
                          hint="name a series Debian carries, e.g. --kernel debian:7.2, or pass --kernel PATH")
    dest = kdir / pick.packages[0]
    k = _cached(dest)
    if k is None:
        with locked(dest):
            k = _cached(dest) or _fetch_packages(pick.packages, dest, progress, apt_index_options(index),
                                                 hint=f"run `harness kernel fetch debian:{series}` to refresh the index")
    try:
        write_atomic(pointer, json.dumps({"package": pick.packages[0], "release": k.release}) + "\n")
    except CacheError:
        pass  # only a shortcut for the next run
    return k


def _default_series() -> str | None:
    """The series of the default kernel package (from the last resolution, else apt), or None."""
    try:
        package = json.loads((cache_dir() / "kernels" / "default.json").read_text()).get("package")
    except (OSError, ValueError, AttributeError):
        package = None
    if not package:
        try:
            package = resolve_kernel_package()
        except KernelError:
            return None
    m = KERNEL_PACKAGE_RE.match(package)
    return _series_of(m.group(1)) if m else None
