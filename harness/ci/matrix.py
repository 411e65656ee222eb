"""The nightly matrix (``harness/ci/matrix.yaml``) loaded, checked and expanded into cells (pure but
for reading the file and the topologies' own ``machine.accel``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError
from harness.resources import ci_matrix_file

KERNEL_KINDS = ("default", "tree", "series")  # or debian:X.Y
ACCELS = ("auto", "kvm", "tcg")


class MatrixError(UsageError):
    """The matrix file is wrong: names the file, the key and the fix."""


@dataclass(frozen=True)
class Cell:
    """One CI job: a topology on a kernel, on an accelerator, running a suite."""

    id: str
    topology: str
    kernel: str            # the kernel's id in the matrix
    kernel_spec: str       # default | tree | series | debian:X.Y
    accel: str
    accel_why: str
    suite: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["suite"] = " ".join(self.suite)  # a string: GitHub's matrix values are shown in job names
        return d


@dataclass(frozen=True)
class Matrix:
    accel: str
    suite: list[str]
    kernels: dict[str, str]                       # id -> spec, in order
    topologies: list[dict[str, Any]]
    local: dict[str, Any]


def _fail(where: str, message: str, path: Path) -> MatrixError:
    return MatrixError(f"{path}: {where}: {message}")


def _strings(value: Any, where: str, path: Path) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "must be a string or a list of strings", path)
    return list(value)


def parse(data: Any, path: Path) -> Matrix:
    """The matrix from its YAML data (pure); MatrixError names what is wrong."""
    if not isinstance(data, dict):
        raise _fail("(top)", "must be a mapping with kernels and topologies", path)
    unknown = set(data) - {"accel", "suite", "kernels", "topologies", "local"}
    if unknown:
        raise _fail(", ".join(sorted(unknown)), "unknown key (accel, suite, kernels, topologies, local)", path)
    accel = data.get("accel", "auto")
    if accel not in ACCELS:
        raise _fail("accel", f"{accel!r} is not one of {', '.join(ACCELS)}", path)
    kernels: dict[str, str] = {}
    for i, k in enumerate(data.get("kernels") or []):
        if not isinstance(k, dict) or not isinstance(k.get("id"), str) or not isinstance(k.get("kernel"), str):
            raise _fail(f"kernels[{i}]", "needs an id and a kernel (default, tree, series or debian:X.Y)", path)
        spec = k["kernel"]
        if spec not in KERNEL_KINDS and not spec.startswith("debian:"):
            raise _fail(f"kernels[{i}].kernel", f"{spec!r} is not default, tree, series or debian:X.Y", path)
        if k["id"] in kernels:
            raise _fail(f"kernels[{i}].id", f"{k['id']!r} appears twice", path)
        kernels[k["id"]] = spec
    if not kernels:
        raise _fail("kernels", "lists no kernel", path)
    topologies = []
    for i, t in enumerate(data.get("topologies") or []):
        t = {"name": t} if isinstance(t, str) else t
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _fail(f"topologies[{i}]", "needs a name (a preset or a topology file)", path)
        for k in t.get("kernels", []):
            if k not in kernels:
                raise _fail(f"topologies[{i}].kernels", f"{k!r} is not a kernel id ({', '.join(kernels)})", path)
        topologies.append(t)
    if not topologies:
        raise _fail("topologies", "lists no topology", path)
    local = data.get("local") or {}
    names = {t["name"] for t in topologies}
    for t in local.get("topologies", []):
        if t not in names:
            raise _fail("local.topologies", f"{t!r} is not one of the matrix's topologies", path)
    for k in local.get("kernels", []):
        if k not in kernels:
            raise _fail("local.kernels", f"{k!r} is not a kernel id ({', '.join(kernels)})", path)
    if local.get("accel", accel) not in ACCELS:
        raise _fail("local.accel", f"{local['accel']!r} is not one of {', '.join(ACCELS)}", path)
    return Matrix(accel=accel, suite=_strings(data.get("suite", ["guest-tests"]), "suite", path), kernels=kernels,
                  topologies=topologies, local=local)


def load(path: Path | None = None) -> Matrix:
    """The matrix file (default: the package's ``matrix.yaml``)."""
    path = path or ci_matrix_file()
    try:
        return parse(yaml.safe_load(path.read_text()), path)
    except yaml.YAMLError as e:
        raise MatrixError(f"{path}: not valid YAML: {e}") from None


def topology_accel(name: str) -> str:
    """The topology's own ``machine.accel`` (a preset name or a file)."""
    from harness.topology import load as load_topology

    return load_topology(name).topology.machine.accel


def cell_accel(default: str, topology: str) -> tuple[str, str]:
    """A cell's accelerator and why: the topology's ``tcg`` wins over the matrix's default (pure)."""
    if topology == "tcg" and default != "tcg":
        return "tcg", "topology: machine.accel tcg"
    return default, "matrix default"


def cells(m: Matrix, *, local: bool = False, accel_of=topology_accel) -> list[Cell]:
    """Every cell, topologies outer, kernels inner; ``local``: the ``local`` subset under its accelerator."""
    default = m.local.get("accel", m.accel) if local else m.accel
    wanted_t = set(m.local.get("topologies", [])) if local else None
    wanted_k = set(m.local.get("kernels", [])) if local else None
    out = []
    for t in m.topologies:
        if wanted_t is not None and t["name"] not in wanted_t:
            continue
        accel, why = cell_accel(default, accel_of(t["name"]))
        suite = (_strings(m.local["suite"], "local.suite", Path("matrix")) if local and "suite" in m.local
                 else _strings(t.get("suite", m.suite), "suite", Path("matrix")))
        for kid, spec in m.kernels.items():
            if wanted_k is not None and kid not in wanted_k:
                continue
            if "kernels" in t and kid not in t["kernels"]:
                continue
            stem = Path(t["name"]).stem
            out.append(Cell(id=f"{stem}--{kid}", topology=t["name"], kernel=kid, kernel_spec=spec, accel=accel,
                            accel_why=why, suite=suite))
    return out


def github_matrix(cs: list[Cell]) -> dict[str, Any]:
    """The ``strategy.matrix`` a workflow reads with ``fromJSON``: ``{"include": [cell, ...]}`` (pure)."""
    return {"include": [c.to_json() for c in cs]}
