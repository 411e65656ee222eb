"""The private-node provisioning module: shipped as source (``modsrc/``), built out of tree.

``guest.provision`` entries with ``via: private-module`` need ``numa_harness_private.ko``
built against the very kernel the guest boots (``make -C BUILD M=DIR modules``, as a KUnit
test module is). :func:`module_for_kernel` finds the kernel's build tree from its image
(``BUILD/arch/x86/boot/bzImage``, the ``--kernel-tree`` layout), builds the module once per
kernel build into the cache and returns the ``.ko``. ``NUMA_HARNESS_PRIVATE_MODULE`` names a
``.ko`` built elsewhere instead. The module itself (what it calls in the kernel) is described
at the top of ``modsrc/numa_harness_private.c``.

Owns: building and caching that module. Must not know: the guest, QEMU, topologies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from harness.cachefs import locked
from harness.errors import KernelError
from harness.paths import cache_dir
from harness.resources import private_module_source_dir

MODULE = "numa_harness_private"
ENV = "NUMA_HARNESS_PRIVATE_MODULE"
BUILD_TIMEOUT = 600


def build_tree_of(image: Path) -> Path | None:
    """The kernel build directory of a bzImage: the one it sits in (``BUILD/arch/x86/boot/bzImage``),
    or, for the copy ``--kernel-tree`` installs into the cache, the tree its manifest names."""
    from harness.kernel.tools import read_manifest

    image = Path(image).resolve()
    if image.parts[-4:-1] == ("arch", "x86", "boot"):
        tree = image.parents[3]
    else:
        m = read_manifest(image.parents[1]) or {}
        origin = str(m.get("origin", ""))
        if not origin.startswith("tree: "):
            return None
        tree = Path(origin.removeprefix("tree: "))
    return tree if (tree / "Module.symvers").is_file() and (tree / ".config").is_file() else None


def module_key(tree: Path) -> str:
    """Cache key of a build: the kernel build (its path and Module.symvers) and the module's source."""
    h = hashlib.sha256(str(tree.resolve()).encode())
    h.update((tree / "Module.symvers").read_bytes())
    for f in sorted(private_module_source_dir().iterdir()):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def build_module(tree: Path) -> Path:
    """``numa_harness_private.ko`` built against build tree ``tree`` (cached)."""
    from harness.kernel.tools import run_tool

    dest = cache_dir() / "modules" / f"{MODULE}-{module_key(tree)}"
    ko = dest / f"{MODULE}.ko"
    if ko.is_file():
        return ko
    with locked(dest):
        if ko.is_file():
            return ko
        work = dest.with_name(dest.name + ".build")
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(private_module_source_dir(), work)
        run_tool(["make", "-C", str(tree), f"M={work}", "modules"], timeout=BUILD_TIMEOUT,
                 what=f"building {MODULE}.ko against {tree}",
                 hint="the kernel must carry the Private Memory Nodes series (node_private.h, cram.h) and "
                      "have CONFIG_DEV_DAX and CONFIG_MEMORY_HOTPLUG")
        dest.mkdir(parents=True, exist_ok=True)
        os.replace(work / f"{MODULE}.ko", ko)
        shutil.rmtree(work, ignore_errors=True)
    return ko


def module_for_kernel(image: Path | None) -> tuple[Path | None, str]:
    """(the module for the kernel at ``image``, or None with why not)."""
    env = os.environ.get(ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise KernelError(f"{ENV}={env} is not a file", hint="point it at a built numa_harness_private.ko")
        return p, ""
    tree = build_tree_of(image) if image is not None else None
    if tree is None:
        return None, (f"{MODULE}.ko is built against the kernel's build tree, and this kernel has none "
                      f"(boot it with --kernel-tree BUILD, or set {ENV} to a .ko built for it)")
    return build_module(tree), ""
