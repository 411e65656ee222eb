"""``cxl list -vvv`` and ``daxctl list`` JSON: kept as the tools printed it, plus the few objects
tests look up by name (memdevs, decoders, regions; dax devices with their target node)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .parse import StatsError


@dataclass(frozen=True)
class CxlInfo:
    """``cxl list -vvv``: the JSON as the tool printed it, and the objects tests look up most."""

    raw: Any
    memdevs: dict[str, dict] = field(default_factory=dict)   # "mem0" -> its object
    decoders: dict[str, dict] = field(default_factory=dict)  # "decoder2.0" -> its object
    regions: dict[str, dict] = field(default_factory=dict)   # "region0" -> its object


@dataclass(frozen=True)
class DaxDevice:
    chardev: str
    size: int
    target_node: int | None
    mode: str | None
    raw: dict


def _walk(obj: Any) -> Iterable[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _json(text: str, tool: str) -> Any:
    text = text.strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except ValueError as e:
        raise StatsError(f"`{tool}` printed something that is not JSON: {e}") from None


def cxl_list(text: str) -> CxlInfo:
    raw = _json(text, "cxl list")
    memdevs: dict[str, dict] = {}
    decoders: dict[str, dict] = {}
    regions: dict[str, dict] = {}
    for o in _walk(raw):
        # A region's "mappings" repeat {"memdev", "decoder"} pairs: those are references, not objects.
        ref = isinstance(o.get("memdev"), str) and isinstance(o.get("decoder"), str)
        if isinstance(o.get("memdev"), str) and not ref:
            memdevs.setdefault(o["memdev"], o)
        if isinstance(o.get("decoder"), str) and not ref:
            decoders.setdefault(o["decoder"], o)
        if isinstance(o.get("region"), str) and "decoder" not in o:
            regions.setdefault(o["region"], o)
    return CxlInfo(raw=raw, memdevs=memdevs, decoders=decoders, regions=regions)


def daxctl_list(text: str) -> list[DaxDevice]:
    raw = _json(text, "daxctl list")
    return [DaxDevice(chardev=o["chardev"], size=int(o.get("size", 0)), target_node=o.get("target_node"),
                      mode=o.get("mode"), raw=o)
            for o in _walk(raw) if isinstance(o.get("chardev"), str)]
