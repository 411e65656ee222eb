"""A small declarative schema: dataclasses + field docs -> a YAML loader with paths.

Each topology dataclass declares its fields with :func:`fld` (doc string,
default). :func:`load_struct` walks plain YAML data (dicts, lists, scalars)
into those dataclasses, converting the value types of :mod:`harness.units` and raising
:class:`SchemaError` with the YAML path of the offending value and, for
unknown keys, the closest valid key. The README's topology reference is
generated from the same field docs (:func:`reference_rows`), so it cannot
drift from the model.

This module knows nothing about NUMA or CXL; it is the generic half.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, field
from typing import Any, Literal, Union, get_args, get_origin

from harness.units import Granularity, IdList, SchemaError, SchemaErrors, Size, format_size

__all__ = ["Found", "SchemaError", "SchemaErrors", "fld", "json_schema", "load_struct", "reference_rows"]


# --- field declaration ---------------------------------------------------------

def fld(doc: str, default: Any = MISSING, *, yaml_name: str | None = None) -> Any:
    """Declare a schema field with its documentation and default (MISSING = required)."""
    meta = {"doc": doc, "yaml": yaml_name}
    if isinstance(default, (list, dict)):
        d = default
        return field(default_factory=lambda: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("yaml") or f.name


# --- loading -------------------------------------------------------------------

class Found(list):
    """Errors gathered while going on past each one: ``with found.item(): ...`` per independent
    part, then :meth:`done` raises them all as one :class:`SchemaErrors` (if there are any)."""

    @contextmanager
    def item(self) -> Iterator[None]:
        try:
            yield
        except SchemaErrors as e:
            self.extend(e.errors)
        except SchemaError as e:
            self.append(e)

    def done(self) -> None:
        if self:
            raise SchemaErrors(list(self))


def load_struct(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from YAML ``data``; ``path`` is where ``data`` sits in the file."""
    label = path or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SchemaError(label, f"expected a mapping of keys, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    found = Found()
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(fields)}"
            found.append(SchemaError(_join(path, str(key)), f"unknown key '{key}'", hint=hint))
    kwargs = {}
    for key, f in fields.items():
        sub = _join(path, key)
        if key in data:
            with found.item():
                kwargs[f.name] = convert(hints[f.name], data[key], sub)
        elif f.default is MISSING and f.default_factory is MISSING:
            found.append(SchemaError(sub, f"required key '{key}' is missing",
                                     hint=f"add '{key}:' ({f.metadata.get('doc', '')})"))
    found.done()
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert one YAML value to type ``tp`` (the annotation), or raise SchemaError."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return convert(args[0], value, path)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(map(str, choices))}"
        raise SchemaError(path, f"{value!r} is not one of {', '.join(map(str, choices))}", hint=hint)
    if origin in (list, tuple):
        (item_tp, *_rest) = get_args(tp)
        if value is None:
            return origin()
        if not isinstance(value, list):
            raise SchemaError(path, f"expected a list, got {value!r}", hint="write it as a YAML list: [a, b] or '- a' lines")
        found = Found()
        items = []
        for i, v in enumerate(value):
            with found.item():
                items.append(convert(item_tp, v, f"{path}[{i}]"))
        found.done()
        return origin(items)
    if origin is dict:
        ktp, vtp = get_args(tp)
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected a mapping, got {value!r}")
        found = Found()
        out = {}
        for k, v in value.items():
            with found.item():
                out[convert(ktp, k, f"{path}.{k}")] = convert(vtp, v, f"{path}.{k}")
        found.done()
        return out
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return load_struct(tp, value, path)
    if tp in (Size, Granularity, IdList):
        return tp.parse(value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SchemaError(path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]+", value):
            return int(value, 16)
        raise SchemaError(path, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SchemaError(path, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise SchemaError(path, f"expected a string, got {value!r}")
    if tp is Any:
        return value
    raise TypeError(f"schema: unsupported annotation {tp!r} at {path}")


# --- documentation -------------------------------------------------------------

def type_name(tp: Any) -> str:
    """A reader's name for an annotation, used in the README reference."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return type_name(args[0])
    if origin is Literal:
        return " \\| ".join(str(c) for c in get_args(tp))
    if origin in (list, tuple):
        return f"list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"map {type_name(k)} → {type_name(v)}"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp.__name__
    return {Size: "size", Granularity: "bytes", IdList: "id list", int: "int", str: "string", bool: "bool", float: "number"}.get(tp, str(tp))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not MISSING:
        d = f.default
        if d is None:
            return "—"
        if dataclasses.is_dataclass(d):
            return "(section)"
        if isinstance(d, bool):
            return "true" if d else "false"
        if isinstance(d, Granularity):
            return str(int(d))
        if isinstance(d, Size):
            return format_size(d)
        if d == "":
            return '""'
        return str(d)
    if f.default_factory is not MISSING:
        v = f.default_factory()
        return "[]" if isinstance(v, list) else ("{}" if isinstance(v, dict) else "—")
    return "required"


def reference_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(yaml key path, type, default, meaning) for every field, depth first."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = _join(prefix, _yaml_key(f))
        tp = hints[f.name]
        rows.append((key, type_name(tp), _default_text(f), f.metadata.get("doc", "")))
        inner = tp
        origin = get_origin(inner)
        if origin in (Union, types.UnionType):
            inner = [a for a in get_args(inner) if a is not type(None)][0]
            origin = get_origin(inner)
        if origin in (list, tuple):
            inner = get_args(inner)[0]
            if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                rows.extend(reference_rows(inner, key + "[]"))
        elif isinstance(inner, type) and dataclasses.is_dataclass(inner):
            rows.extend(reference_rows(inner, key))
    return rows


# --- JSON Schema (for editors) -------------------------------------------------

_SIZE_SCHEMA = {"description": "a size as QEMU writes it: 512M, 1G, 16K, 2T (or 0)",
                "anyOf": [{"type": "string", "pattern": r"^\s*(0|\d+[KMGT])\s*$"}, {"const": 0}]}
_IDLIST_SCHEMA = {"description": "ids: ranges and single ids such as 0-3,6, or a list of integers",
                  "anyOf": [{"type": "string", "pattern": r"^[\d\s,-]+$"}, {"type": "integer", "minimum": 0},
                            {"type": "array", "items": {"type": "integer", "minimum": 0}}]}


def json_schema(cls: type, *, title: str | None = None) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of dataclass ``cls``, from the same field declarations
    and docs that :func:`load_struct` reads and :func:`reference_rows` prints, so an editor's
    completion and hover text say what the loader accepts and the README says."""
    defs: dict[str, Any] = {}
    root = _object_schema(cls, defs)
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if title:
        out["title"] = title
    out.update(root)
    out["$defs"] = defs
    return out


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = _yaml_key(f)
        sch = dict(_type_schema(hints[f.name], defs))
        doc = f.metadata.get("doc", "")
        if doc:
            sch["description"] = doc
        default = _default_text(f)
        if default not in ("required", "—", "(section)", "[]", "{}"):
            sch["markdownDescription"] = f"{doc} (default: `{default}`)" if doc else f"default: `{default}`"
        props[key] = sch
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(key)
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    return out


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return {"anyOf": [_type_schema(args[0], defs), {"type": "null"}]}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (list, tuple):
        return {"type": "array", "items": _type_schema(get_args(tp)[0], defs)}
    if origin is dict:
        _k, v = get_args(tp)
        return {"type": "object", "additionalProperties": _type_schema(v, defs)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder: a type that contains itself stops here
            defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if tp in (Size, Granularity):
        return dict(_SIZE_SCHEMA) if tp is Size else {"anyOf": [{"type": "integer", "minimum": 0}, _SIZE_SCHEMA]}
    if tp is IdList:
        return dict(_IDLIST_SCHEMA)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^0x[0-9a-fA-F]+$"}]}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": ["string", "number"]}
    if tp is Any:
        return {}
    raise TypeError(f"schema: unsupported annotation {tp!r}")
