"""The guest-image cache: where images live, their manifests, and whether a cached one is whole.

An image ``cache_dir()/images/<key>.cpio`` has a manifest ``<key>.json`` beside it that records
the input groups it was built from and the image's *fingerprint*: its size and a sha256 of
its first and last MiB. :func:`cached_image_problem` compares the two before a cached image
is used, so a truncated or partly overwritten image (a full disk, a killed copy) is rebuilt
with the reason said, instead of booting a guest that never comes up. Writes go through a
temporary file and a rename; I/O errors become one-line CacheErrors
(:mod:`harness.cachefs`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from harness.cachefs import cache_errors, write_atomic
from harness.image.cpio import CpioWriter, Tree
from harness.paths import cache_dir

#: Uncompressed cpio: QEMU loads it with fw_cfg DMA, and the guest skips decompression.
COMPRESSION = "none"
KEEP_IMAGES = 8


def write_image(tree: Tree, dest: Path) -> None:
    """Write the cpio (compressed per COMPRESSION) to ``dest`` atomically (a CacheError if it cannot)."""
    with cache_errors(f"writing the guest image {dest}"):
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
                os.fsync(raw.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def image_path(key: str) -> Path:
    return cache_dir() / "images" / (f"{key}.cpio.gz" if COMPRESSION == "gzip" else f"{key}.cpio")


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


#: How much of each end of an image its fingerprint hashes.
FINGERPRINT_SPAN = 1 << 20


def image_fingerprint(path: Path) -> dict[str, object]:
    """``{"size", "ends_sha256"}`` of an image file: its size and a sha256 of its first and last
    MiB. Cheap (2 MiB read) and enough to catch a truncated or partly overwritten image."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256(f.read(FINGERPRINT_SPAN))
        f.seek(max(0, size - FINGERPRINT_SPAN))
        h.update(f.read(FINGERPRINT_SPAN))
    return {"size": size, "ends_sha256": h.hexdigest()}


def cached_image_problem(manifest: Mapping[str, object] | None, actual: Mapping[str, object] | None) -> str | None:
    """Why a cached image cannot be used (None: it can), from its manifest and its file's
    fingerprint (None: no file) (pure)."""
    if actual is None:
        return None if manifest is None else "the cached image file is missing"
    if manifest is None:
        return "the cached image has no manifest"
    want = manifest.get("image")
    if not isinstance(want, dict):
        return "the cached image has no recorded size and checksum (an older harness built it)"
    if actual.get("size") != want.get("size"):
        return f"the cached image is {actual.get('size')} bytes, its manifest says {want.get('size')} (truncated?)"
    if actual.get("ends_sha256") != want.get("ends_sha256"):
        return "the cached image's checksum does not match its manifest (damaged)"
    return None


def cached(path: Path, manifest_path: Path) -> tuple[bool, str | None]:
    """(usable, why not) for the cached image at ``path``."""
    try:
        actual = image_fingerprint(path) if path.is_file() else None
    except OSError as e:
        return False, f"the cached image cannot be read ({e.strerror})"
    manifest = read_json(manifest_path)
    if actual is None and manifest is None:
        return False, None
    problem = cached_image_problem(manifest, actual)
    return problem is None, problem


def prune(images: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used images (and their manifests)."""
    built = sorted((p for p in images.glob("*.cpio*") if not p.name.startswith((".", "bare-"))),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in built[keep:]:
        old.unlink(missing_ok=True)
        (images / (old.name.split(".")[0] + ".json")).unlink(missing_ok=True)


def touch(path: Path) -> None:
    """Mark ``path`` most recently used (survives pruning); best effort: a read-only cache still serves."""
    try:
        os.utime(path)
    except OSError:
        pass
