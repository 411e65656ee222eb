"""The cpio "newc" archive writer and the image tree written through it (pure but for reading
the files an entry points at).

:class:`Tree` is the image's contents before writing (path -> entry, parents implicit);
:class:`CpioWriter` emits root-owned, deterministic entries (fixed mtime, sequential inodes),
so the same tree always gives the same bytes. Neither knows what goes into an image
(:mod:`harness.image.build` decides that).
"""

from __future__ import annotations

import gzip
import lzma
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

#: Seconds allowed to decompress one zstd module.
ZSTD_TIMEOUT = 120


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
                data = e[1] if isinstance(e[1], bytes) else read_source(e[1])
                writer.file(path, data, e[2])
            elif e[0] == "link":
                writer.symlink(path, e[1])
            else:
                writer.chardev(path, e[1], e[2], e[3])
        writer.finish()


def read_source(src: Path) -> bytes:
    """File content; compressed kernel modules are decompressed on the way."""
    data = src.read_bytes()
    if src.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if src.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if src.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-d", "-c", str(src)], capture_output=True, check=True,
                              timeout=ZSTD_TIMEOUT).stdout
    return data
