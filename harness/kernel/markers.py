"""The kernel options a test directory asks for through ``requires_kconfig(...)`` markers.

Read from the test files' syntax (``ast``), never by importing them, so a
check runs without the tests' own dependencies.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KconfigRequirement:
    where: str                 # file:line of the marker
    test: str                  # the decorated test/class, or "module" for pytestmark
    options: tuple[str, ...]   # CONFIG_X names as written (CONFIG_ prefix added if missing)


def _options(call: ast.Call) -> tuple[str, ...]:
    out = []
    for a in call.args:
        if isinstance(a, ast.Constant) and isinstance(a.value, str):
            out.append(a.value if a.value.startswith("CONFIG_") else f"CONFIG_{a.value}")
    return tuple(out)


def _is_marker(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "requires_kconfig")


def requirements_in_source(text: str, file: str = "<test>") -> list[KconfigRequirement]:
    """Every ``requires_kconfig("CONFIG_X", ...)`` call in one test file, with its test's name."""
    tree = ast.parse(text, filename=file)
    owner: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                for sub in ast.walk(dec):
                    owner[id(sub)] = node.name
    out = []
    for node in ast.walk(tree):
        if _is_marker(node):
            assert isinstance(node, ast.Call)
            opts = _options(node)
            if opts:
                out.append(KconfigRequirement(f"{file}:{node.lineno}", owner.get(id(node), "module"), opts))
    return sorted(out, key=lambda r: (r.where.rsplit(":", 1)[0], int(r.where.rsplit(":", 1)[1])))


def scan_requires_kconfig(directory: Path) -> list[KconfigRequirement]:
    """The markers of every ``test_*.py`` / ``*_test.py`` under ``directory``."""
    directory = Path(directory)
    files = [directory] if directory.is_file() else sorted(
        p for p in directory.rglob("*.py") if p.name.startswith("test_") or p.name.endswith("_test.py"))
    out: list[KconfigRequirement] = []
    for p in files:
        try:
            out += requirements_in_source(p.read_text(errors="replace"), str(p))
        except SyntaxError:
            continue
    return out
