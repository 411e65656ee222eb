"""Which kernel modules go into the image (pure): the wanted list, closed over ``modules.dep``.

Reads no files itself: :mod:`harness.image.build` passes the texts of the kernel's
``modules.dep``, ``modules.builtin`` and ``modules.alias`` in and writes what comes out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

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
    # compressed swap in RAM: the contract's reclaim and MADV_PAGEOUT checks need somewhere to swap to
    "zram",
    # host file sharing (optional)
    "9p", "9pnet", "9pnet_virtio", "virtiofs", "fuse",
)


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
