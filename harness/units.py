"""Sizes and id lists as QEMU and sysfs write them, shared by every layer that reads or prints them.

:class:`Size` (``512M``, ``1G``), :class:`Granularity`, :func:`format_size` (bytes -> the
shortest exact size string) and :class:`IdList` (``0-3,6``) are read from topology YAML, written
into QEMU options and parsed back from the guest's sysfs; they live here, below the topology,
QEMU and statistics layers, so none of them reaches into another for a number's spelling.
A value that cannot be read raises :class:`SchemaError` naming where it came from.

Must not know: topologies, QEMU, the guest. Imports nothing of the harness.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Granularity", "IdList", "SchemaError", "SchemaErrors", "Size", "format_size"]


class SchemaError(Exception):
    """Raised with the YAML path of the value that is wrong, a message and an optional hint."""

    def __init__(self, path: str, message: str, hint: str | None = None):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.hint = hint


class SchemaErrors(SchemaError):
    """Several :class:`SchemaError` found in one pass, so a file can be fixed in one go.

    Behaves as its first error (``path``, ``message``, ``hint``); ``errors`` holds them all, flat.
    """

    errors: list[SchemaError]

    def __init__(self, errors: list[SchemaError]):
        flat: list[SchemaError] = []
        for e in errors:
            flat.extend(e.errors if isinstance(e, SchemaErrors) else [e])
        first = flat[0]
        super().__init__(first.path, first.message, first.hint)
        self.errors = flat


# --- value types ---------------------------------------------------------------

_SIZE_RE = re.compile(r"^(\d+)([KMGT])$")
_SIZE_MULT = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_NEAR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT])?(?:i?[bB])?\s*$")


class Size(int):
    """A byte count written the way QEMU reads it: ``512M``, ``1G``, ``16K``, ``2T``.

    Integers without a unit are refused: QEMU reads ``-m 1024`` as MiB but
    ``size=1024`` as bytes, so a bare number is ambiguous.
    """

    @classmethod
    def parse(cls, value: Any, path: str) -> Size:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise SchemaError(path, f"expected a size such as 512M or 1G, got {value!r}")
        if isinstance(value, int):
            if value == 0:
                return cls(0)
            raise SchemaError(path, f"size {value} has no unit",
                              hint=f"write it with a unit QEMU understands, e.g. {_suggest_unit(value)}")
        text = value.strip()
        if text == "0":
            return cls(0)
        m = _SIZE_RE.match(text)
        if m:
            return cls(int(m.group(1)) * _SIZE_MULT[m.group(2)])
        near = _SIZE_NEAR_RE.match(text)
        if near and near.group(2):
            num, unit = near.group(1), near.group(2).upper()
            if "." in num:
                hint = f"use a whole number of a smaller unit, e.g. {_suggest_unit(int(float(num) * _SIZE_MULT[unit]))}"
            else:
                hint = f"write {num}{unit}"
            raise SchemaError(path, f"size {value!r} is not in QEMU's form", hint=hint)
        raise SchemaError(path, f"size {value!r} is not in QEMU's form",
                          hint="use a whole number followed by K, M, G or T, e.g. 512M or 1G")


class Granularity(Size):
    """An interleave granularity in bytes: ``256``, ``512``, or with a unit ``4K``."""

    @classmethod
    def parse(cls, value: Any, path: str) -> Granularity:
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        return cls(Size.parse(value, path))


def _suggest_unit(n: int) -> str:
    for unit in "TGMK":
        if n and n % _SIZE_MULT[unit] == 0:
            return f"{n // _SIZE_MULT[unit]}{unit}"
    return f"{max(1, n >> 20)}M"


def format_size(n: int) -> str:
    """Bytes -> the shortest exact QEMU size string (``1G``, ``256M``); 0 -> ``0``."""
    if n == 0:
        return "0"
    for unit in "TGMK":
        if n % _SIZE_MULT[unit] == 0:
            return f"{n // _SIZE_MULT[unit]}{unit}"
    return str(n)


class IdList(tuple):
    """A set of small integers written as ``0-3,6``, ``5``, or a YAML list ``[0, 1]``. Sorted, unique."""

    @classmethod
    def parse(cls, value: Any, path: str) -> IdList:
        items: list[int] = []
        if isinstance(value, bool):
            raise SchemaError(path, f"expected a list such as 0-3 or [0, 1], got {value!r}")
        if isinstance(value, int):
            items = [value]
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise SchemaError(f"{path}[{i}]", f"expected a non-negative integer, got {v!r}")
                items.append(v)
        elif isinstance(value, str):
            for part in value.replace(" ", "").split(","):
                m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
                if not m:
                    raise SchemaError(path, f"cannot read {value!r} as a list of ids",
                                      hint="write ranges and single ids like 0-3,6")
                lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
                if hi < lo:
                    raise SchemaError(path, f"range {part} runs backwards", hint=f"write {hi}-{lo}")
                items.extend(range(lo, hi + 1))
        else:
            raise SchemaError(path, f"expected a list such as 0-3 or [0, 1], got {value!r}")
        if len(set(items)) != len(items):
            dup = sorted({x for x in items if items.count(x) > 1})
            raise SchemaError(path, f"lists {dup[0]} more than once")
        return cls(sorted(items))

    def ranges(self) -> list[str]:
        """``(0,1,2,5)`` -> ``["0-2", "5"]``: the form QEMU's ``cpus=`` takes, one range each."""
        out: list[str] = []
        i = 0
        while i < len(self):
            j = i
            while j + 1 < len(self) and self[j + 1] == self[j] + 1:
                j += 1
            out.append(str(self[i]) if i == j else f"{self[i]}-{self[j]}")
            i = j + 1
        return out

    def __str__(self) -> str:
        return ",".join(self.ranges())
