"""Each sub-package's docstring says what it must not know; these rules keep it true.

The rules are data: a package -> the modules it must not import (a name covers its
sub-modules), each with the docstring's words. Every module's imports are read with ``ast``,
function-level imports included, relative ones resolved, so a lazy import cannot hide a
dependency. A rule the code breaks today, in code another branch is moving, is marked
``xfail(strict=True)``: it fails loudly the day the move lands, and the mark comes off.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import harness

ROOT = Path(harness.__file__).parent

#: package -> (what its docstring says it must not know, the modules that would know it)
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "harness.units": ("anything of the harness", ("harness.",)),
    "harness.topology": ("QEMU option syntax, SSH, the guest",
                         ("harness.qemu.argv", "harness.qemu.options", "harness.qemu.bootargs", "harness.qemu.preflight",
                          "harness.qemu.limits", "harness.vm", "harness.guest", "paramiko",
                          "harness.plugin", "harness.cli", "harness.boot")),
    "harness.qemu": ("how a VM is launched or supervised, topology YAML files, the guest",
                     ("harness.vm", "harness.topology.load", "harness.topology.schema", "harness.guest",
                      "harness.plugin", "harness.cli", "harness.boot", "paramiko")),
    "harness.vm": ("topologies or YAML, what the guest is asked to do",
                   ("harness.topology", "yaml", "harness.guest.setup", "harness.guest.workloads",
                    "harness.contract", "harness.stats", "harness.plugin", "harness.cli", "harness.boot")),
    "harness.guest": ("how the guest is reached, YAML, QEMU options",
                      ("harness.vm", "harness.qemu", "harness.topology.load", "harness.topology.schema", "yaml",
                       "paramiko", "harness.plugin", "harness.cli", "harness.boot")),
    "harness.image": ("topologies, QEMU, how the image is booted",
                      ("harness.topology", "harness.qemu", "harness.vm", "harness.plugin", "harness.cli",
                       "harness.boot")),
    "harness.kernel": ("QEMU, SSH, the guest image",
                       ("harness.qemu", "harness.vm", "paramiko", "harness.image", "harness.plugin", "harness.cli")),
    "harness.stats": ("SSH, QEMU, topologies",
                      ("harness.vm", "paramiko", "harness.qemu", "harness.topology", "harness.plugin", "harness.cli",
                       "harness.boot")),
    "harness.contract": ("pytest, the command line, QEMU",
                         ("pytest", "_pytest", "harness.cli", "harness.qemu", "harness.plugin", "harness.boot")),
    "harness.cli": ("the pytest plugin (it calls the library)", ("harness.plugin", "pytest", "_pytest")),
    "harness.boot": ("pytest, the terminal", ("pytest", "_pytest", "harness.plugin", "harness.cli", "rich")),
    "harness.runner": ("how the guest is reached (SSH, QEMU), pytest, the command line",
                       ("harness.vm", "harness.qemu", "paramiko", "pytest", "_pytest", "harness.cli", "harness.plugin")),
}

#: Rules broken today by code another branch of issue 18 moves; strict: they must start passing then.
MOVING: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (functions included), absolute."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from harness import plugin`
    return out


def _forbids(rule: str, module: str) -> bool:
    return module == rule.rstrip(".") or module.startswith(rule if rule.endswith(".") else rule + ".")


def violations(package: str) -> list[str]:
    what, forbidden = RULES[package]
    pkg_path = ROOT.parent.joinpath(*package.split("."))
    files = sorted(pkg_path.rglob("*.py")) if pkg_path.is_dir() else [pkg_path.with_suffix(".py")]
    out = []
    for f in files:
        for mod in sorted(imports_of(f)):
            if mod.startswith(package + ".") or mod == package:
                continue
            hit = next((r for r in forbidden if _forbids(r, mod)), None)
            if hit:
                out.append(f"{f.relative_to(ROOT.parent)} imports {mod} ({package} must not know {what})")
    return out


@pytest.mark.parametrize("package", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=MOVING[p])) if p in MOVING else p for p in RULES])
def test_package_keeps_its_import_rule(package):
    assert violations(package) == []


def test_every_rule_names_a_package_whose_docstring_states_it():
    for package in RULES:
        path = ROOT.parent.joinpath(*package.split("."))
        doc = ast.get_docstring(ast.parse((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()))
        assert doc and "must not know" in doc.lower(), f"{package}'s docstring states no rule"


def test_the_reader_sees_lazy_and_relative_imports(tmp_path):
    """The check cannot pass by not looking: a function-level import and a relative one count."""
    f = ROOT / "vm" / "accel.py"
    got = imports_of(f)
    assert "harness.kernel.user" in got          # imported inside _kernel_release()
    assert "harness.qemu.bootargs" in got
    assert "harness.vm.process" in got           # imported inside probe_kvm()
    assert _forbids("harness.vm", "harness.vm.machine") and not _forbids("harness.vm", "harness.vmx")
