"""Reading topology files: path or preset name -> validated :class:`Topology`.

Input is bounded before it is interpreted, so no file can exhaust memory or
time: the file is read up to :data:`MAX_FILE_BYTES`, must be UTF-8 (the
error gives the byte offset), YAML aliases may expand to at most
:data:`MAX_YAML_NODES` values, nesting is capped, and a key given twice in
one mapping is refused with both line numbers (PyYAML would silently keep
the last one).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import TopologyError, TopologyIssue
from harness.resources import presets_dir

from .model import Topology
from .schema import SchemaError, SchemaErrors, load_struct
from .validate import validate

#: A topology is a few KiB; anything past this is a wrong file, not a machine.
MAX_FILE_BYTES = 1 << 20
#: Values a document may expand to once aliases are followed (a stock preset has ~200).
MAX_YAML_NODES = 100_000
#: Nesting depth of collections (the model is at most ~6 deep).
MAX_YAML_DEPTH = 64


@dataclass(frozen=True)
class Loaded:
    """A validated topology and where it came from."""

    name: str
    path: Path
    topology: Topology


def preset_names() -> list[str]:
    """Names of the presets shipped in topologies/."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def resolve(ref: str | Path) -> Path:
    """A path to a YAML file, or a preset name such as ``cxl-single``."""
    p = Path(ref)
    if p.is_dir():
        raise TopologyError(str(ref), "", "is a directory, not a topology file",
                            hint="give a path to a .yaml file inside it, or a preset name (harness list)")
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(ref):
        if not p.exists():
            raise TopologyError(str(ref), "", "no such file", hint="give a path to a .yaml file or a preset name (harness list)")
        if not p.is_file():
            raise TopologyError(str(ref), "", "is not a regular file", hint="give a path to a .yaml file")
        return p
    preset = presets_dir() / f"{ref}.yaml"
    if preset.is_file():
        return preset
    close = difflib.get_close_matches(str(ref), preset_names(), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "see 'harness list' for presets"
    raise TopologyError(str(ref), "", "is neither a file nor a preset", hint=hint)


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (naming both lines) and deep nesting.

    YAML merge keys (``<<: *anchor``) work as in PyYAML: a mapping's own keys override merged
    ones, which is not a duplicate. A merge of a non-mapping is refused in one line."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, tuple[int, int]] = {}
            for key_node, _value in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue  # a merge key (<<) is flattened by SafeLoader; keys written here override it
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                here = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if first is not None:
                    raise _DuplicateKey(str(key), first, here)
                seen[key] = here
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: tuple[int, int], second: tuple[int, int]):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second

    def where(self) -> str:
        (l1, c1), (l2, c2) = self.first, self.second
        return f"line {l1}, columns {c1} and {c2}" if l1 == l2 else f"lines {l1} and {l2}"


def _expanded_size(root: yaml.Node) -> int:
    """Values the node graph expands to when aliases are followed (shared nodes counted each time).

    Memoised per node, so an alias bomb is measured in time linear in the
    *written* document, and refused before anything is built from it.
    Raises ``_TooDeep`` beyond :data:`MAX_YAML_DEPTH`.
    """
    memo: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise _TooDeep(node.start_mark.line + 1)
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = 1  # breaks recursive aliases (a node containing itself)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c, depth + 1) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        n = min(n, MAX_YAML_NODES + 1)
        memo[key] = n
        return n

    return size(root, 0)


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise TopologyError(file, f"line {line}",
                            f"not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}",
                            hint="save the file as UTF-8") from None


def parse(text: str | bytes, file: str) -> Topology:
    """YAML text -> validated Topology; errors name ``file`` and the YAML path."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise _too_big(file, len(text))
        text = _decode(text, file)
    elif len(text) > MAX_FILE_BYTES:
        raise _too_big(file, len(text.encode("utf-8", "replace")))
    marks: dict[str, tuple[int, int]] = {}
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                if _expanded_size(node) > MAX_YAML_NODES:
                    raise TopologyError(file, "", f"YAML aliases expand to more than {MAX_YAML_NODES} values",
                                        hint="write the topology out without alias chains")
                data = loader.construct_document(node)
                marks = yaml_marks(node)  # after construction: merge keys (<<) are flattened by then
            else:
                data = None
        finally:
            loader.dispose()
    except _DuplicateKey as e:
        raise TopologyError(file, f"line {e.second[0]}", f"key '{e.key}' is given twice ({e.where()})",
                            hint="keep one; YAML would silently use the last", line=e.second[0], column=e.second[1]) from None
    except _TooDeep as e:
        raise TopologyError(file, f"line {e.line}", f"nested more than {MAX_YAML_DEPTH} levels deep",
                            hint="a topology is a few levels deep; check the brackets", line=e.line, column=1) from None
    except RecursionError:
        raise TopologyError(file, "", "nested too deeply to read", hint="a topology is a few levels deep; check the brackets") from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        if e.problem and "for merging" in e.problem and mark is not None:
            # YAML merge keys work (PyYAML merges mappings); only a merge of something else is refused.
            raise TopologyError(file, f"line {mark.line + 1}, column {mark.column + 1}",
                                "'<<:' merges a mapping into this one, and this is not a mapping",
                                hint="write '<<: *anchor' naming an anchored mapping (&anchor), or a list of them",
                                line=mark.line + 1, column=mark.column + 1) from None
        raise _yaml_error(file, e) from None
    except yaml.YAMLError as e:
        raise _yaml_error(file, e) from None
    try:
        topo = load_struct(Topology, data, "")
        validate(topo)
    except SchemaErrors as e:
        raise TopologyError.of([_issue(file, x, marks) for x in e.errors]) from None
    except SchemaError as e:
        raise TopologyError.of([_issue(file, e, marks)]) from None
    return topo


def _yaml_error(file: str, e: yaml.YAMLError) -> TopologyError:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return TopologyError(file, where, f"not valid YAML: {problem}",
                         line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None)


def _issue(file: str, e: SchemaError, marks: dict[str, tuple[int, int]]) -> TopologyIssue:
    """The error with the line and column of its YAML path (or of the nearest enclosing one)."""
    path = e.path
    while path and path not in marks:
        last = _LAST_STEP.search(path)
        path = path[:last.start()] if last else ""
    if e.message.startswith("unknown key") and f"{path}:key" in marks:
        path = f"{path}:key"  # point at the key, not its value
    line, col = marks.get(path, (None, None))
    return TopologyIssue(file, line, col, e.path, e.message, e.hint)


#: The last step of a YAML path: ``.key`` or ``[3]``.
_LAST_STEP = re.compile(r"(\.[^.\[\]]+|\[\d+\])$")


def yaml_marks(root: yaml.Node) -> dict[str, tuple[int, int]]:
    """YAML path (``nodes[0].cpus``, as errors name them) -> 1-based (line, column) in the file.

    A scalar value is located at the value; a mapping or list at its key (``nodes:``), where
    an editor's cursor should go; a list item at its ``-`` entry. ``""`` is the document;
    ``PATH:key`` is where the key itself is written."""
    marks: dict[str, tuple[int, int]] = {"": (root.start_mark.line + 1, root.start_mark.column + 1)}
    seen: set[int] = set()

    def walk(node: yaml.Node, path: str, key_mark: yaml.Mark | None) -> None:
        at = node.start_mark if isinstance(node, yaml.ScalarNode) or key_mark is None else key_mark
        marks.setdefault(path, (at.line + 1, at.column + 1))
        if key_mark is not None:
            marks.setdefault(f"{path}:key", (key_mark.line + 1, key_mark.column + 1))
        if id(node) in seen:  # an alias: its insides were located where the anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            # Flattened merge keys come first, the mapping's own keys (which win) last: own first here.
            for k, v in reversed(node.value):
                if isinstance(k, yaml.ScalarNode):
                    walk(v, f"{path}.{k.value}" if path else str(k.value), k.start_mark)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]", None)

    walk(root, "", None)
    marks[""] = (root.start_mark.line + 1, root.start_mark.column + 1)
    return marks


def _too_big(file: str, n: int) -> TopologyError:
    return TopologyError(file, "", f"is {n / (1 << 20):.1f} MiB; topology files are capped at {MAX_FILE_BYTES >> 20} MiB",
                         hint="is this the right file? a topology is a few KiB of YAML")


def load(ref: str | Path) -> Loaded:
    """Load and validate a topology by path or preset name."""
    path = resolve(ref)
    display = _display(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
            if len(raw) > MAX_FILE_BYTES:
                f.seek(0, 2)
                raise _too_big(display, f.tell())
    except OSError as e:
        raise TopologyError(str(path), "", f"cannot read: {e.strerror}") from None
    return Loaded(name=path.stem, path=path, topology=parse(raw, display))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
