"""Host tools and cached kernel trees shared by the kernel sources.

Running host tools (``depmod``, ``zstd``, ``make``) with one-line errors;
decompressing modules for busybox ``modprobe``; and the cache's kernel trees:
each is built in a temporary directory next to its place and renamed into
place under a lock (:func:`harness.cachefs.locked`), and a finished tree is
never replaced while another process may read it. A tree is used only if its
manifest and the files it names are there (:func:`kernel_from_manifest`).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import lzma
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from harness.cachefs import cache_error, cache_errors
from harness.errors import KernelError
from harness.hints import DOCTOR, install
from harness.kernel.model import Kernel

MANIFEST = "numa-harness-kernel.json"
INSTALL_HINT = f"{DOCTOR}; or pass --kernel PATH/bzImage"
CMD_TIMEOUT = 600
MAKE_TIMEOUT = 3600
COMPRESSED_MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz")


def run_tool(argv: list[str], *, timeout: float = CMD_TIMEOUT, cwd: Path | None = None, what: str,
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


def sbin_env() -> dict[str, str]:
    """The environment with /usr/sbin and /sbin on PATH (depmod lives there; users lack it)."""
    env = dict(os.environ)
    parts = env.get("PATH", "").split(os.pathsep)
    for extra in ("/usr/sbin", "/sbin"):
        if extra not in parts:
            parts.append(extra)
    env["PATH"] = os.pathsep.join(p for p in parts if p)
    return env


def which(name: str) -> str | None:
    return shutil.which(name, path=sbin_env()["PATH"])


def decompress_modules(modules_dir: Path, workers: int = 4) -> int:
    """Turn every ``.ko.xz`` / ``.ko.zst`` / ``.ko.gz`` under ``modules_dir`` into ``.ko``.

    Returns how many were decompressed. zstd needs the host ``zstd`` binary.
    """
    files = [p for p in modules_dir.rglob("*.ko.*") if p.name.endswith(COMPRESSED_MODULE_SUFFIXES)]
    zst = [p for p in files if p.name.endswith(".zst")]
    if zst:
        zstd = which("zstd")
        if zstd is None:
            raise KernelError("modules are zstd-compressed but `zstd` is not installed",
                              hint=install("zstd"))
        for i in range(0, len(zst), 500):
            run_tool([zstd, "-d", "-q", "--rm", "-f", *map(str, zst[i:i + 500])], what="decompressing modules")

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
    depmod = which("depmod")
    if depmod is None:
        raise KernelError("`depmod` not found", hint=install("kmod"))
    run_tool([depmod, "-b", str(root), release], what="indexing kernel modules")


def write_manifest(dest: Path, data: dict) -> None:
    (dest / MANIFEST).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_manifest(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def kernel_from_manifest(dest: Path, m: dict) -> Kernel | None:
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
    size = m.get("image_size")
    if size is not None and k.image.stat().st_size != size:  # a truncated image is not a kernel
        return None
    return k


@contextmanager
def staging_tree(dest: Path, prefix: str, what: str) -> Iterator[Path]:
    """A temporary folder beside ``dest`` to build a kernel tree in (then :func:`install_tree`).

    Any failure inside the block removes it; an OSError becomes a one-line CacheError
    saying ``what`` was under way.
    """
    with cache_errors(what):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    try:
        yield tmp
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise cache_error(e, what) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def install_tree(tmp: Path, dest: Path) -> None:
    """Rename the finished tree ``tmp`` to ``dest``; the caller holds ``dest``'s lock.

    A complete ``dest`` (another process built it first) is kept and ``tmp``
    dropped: a tree others may be reading is never replaced. An incomplete one
    is moved aside, then removed.
    """
    m = read_manifest(dest)
    if m is not None and kernel_from_manifest(dest, m) is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if dest.exists():
        aside = dest.with_name(f".{dest.name}.old{os.getpid()}")
        os.rename(dest, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(tmp, dest)
