"""Reading topology files: path or preset name -> validated :class:`Topology`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import TopologyError
from harness.resources import presets_dir

from .model import Topology
from .schema import SchemaError, load_struct
from .validate import validate


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
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(ref):
        if not p.is_file():
            raise TopologyError(str(ref), "", "no such file", hint="give a path to a .yaml file or a preset name (harness list)")
        return p
    preset = presets_dir() / f"{ref}.yaml"
    if preset.is_file():
        return preset
    close = difflib.get_close_matches(str(ref), preset_names(), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "see 'harness list' for presets"
    raise TopologyError(str(ref), "", "is neither a file nor a preset", hint=hint)


def parse(text: str, file: str) -> Topology:
    """YAML text -> validated Topology; errors name ``file`` and the YAML path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TopologyError(file, where, f"not valid YAML: {problem}") from None
    try:
        topo = load_struct(Topology, data, "")
        validate(topo)
    except SchemaError as e:
        raise TopologyError(file, e.path, e.message, hint=e.hint) from None
    return topo


def load(ref: str | Path) -> Loaded:
    """Load and validate a topology by path or preset name."""
    path = resolve(ref)
    try:
        text = path.read_text()
    except OSError as e:
        raise TopologyError(str(path), "", f"cannot read: {e.strerror}") from None
    return Loaded(name=path.stem, path=path, topology=parse(text, _display(path)))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
