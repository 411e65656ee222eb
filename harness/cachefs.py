"""Writing the cache safely: one lock per artefact, atomic writes, one-line errors.

Every cached artefact is built beside its final place and renamed into place
while its lock is held (:func:`locked`), so concurrent first runs build it once
and a reader never sees a half-written or replaced one. A cache that cannot be
written (read-only, full, not ours) is a :class:`~harness.errors.CacheError`
naming the directory and the fix, never a traceback (:func:`cache_errors`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import CacheError

LOCK_TIMEOUT = 1800  # a default-kernel download may hold it this long
CACHE_HINT = "free some space or set NUMA_HARNESS_CACHE to a writable directory"


def cache_error(e: OSError, what: str) -> CacheError:
    """A one-line CacheError for ``e`` met while ``what``."""
    where = f" {e.filename}" if e.filename else ""
    reason = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}.get(e.errno or 0,
                                                                                        e.strerror or str(e))
    return CacheError(f"cannot write the cache while {what}:{where}: {reason}", hint=CACHE_HINT)


@contextmanager
def cache_errors(what: str) -> Iterator[None]:
    """Turn an OSError of cache I/O inside the block into a CacheError."""
    try:
        yield
    except OSError as e:
        if isinstance(e, CacheError):
            raise
        raise cache_error(e, what) from e


@contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive lock of cache artefact ``path`` (``.NAME.lock`` beside it)."""
    import time

    lock = path.parent / f".{path.name}.lock"
    with cache_errors(f"locking {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CacheError(f"{lock} stayed locked for {timeout:g} s",
                                     hint="another harness is building it; if none runs, remove the lock") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file and a rename (readers see old or new, never half)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with cache_errors(f"writing {path}"):
        try:
            tmp.write_bytes(raw)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
