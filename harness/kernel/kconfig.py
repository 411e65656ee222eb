"""Reading a kernel tree's Kconfig: which symbols exist, what each depends on and who selects it,
and why an option asked for by a fragment did not survive ``olddefconfig``.

A small reader of ``config``/``menuconfig`` entries with their ``depends on``, ``select``
and enclosing ``if``/``menu`` blocks, and an evaluator of their expressions against a
final ``.config`` (pure; unit-tested). Used by :mod:`harness.kernel.build` to explain lost options.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class KconfigEntry:
    symbol: str
    file: str
    depends: list[str] = field(default_factory=list)   # every `depends on` expr, enclosing if/menu included
    selected_by: list[str] = field(default_factory=list)


_SYM = re.compile(r"\b[A-Z0-9_]+\b")


def parse_kconfig(text: str, file: str = "Kconfig", entries: dict[str, KconfigEntry] | None = None
                  ) -> dict[str, KconfigEntry]:
    """``config`` entries of one Kconfig file with their dependencies.

    Collects ``depends on`` of the entry, of enclosing ``if``/``menu`` blocks, and which
    entries ``select`` it. Enough to explain a lost option; not a Kconfig evaluator.
    """
    entries = {} if entries is None else entries
    blocks: list[tuple[str, str | None]] = []  # ("if"|"menu"|"choice", condition)
    cur: KconfigEntry | None = None
    pending_menu = False
    help_indent: int | None = None
    for raw in text.expandtabs(8).splitlines():
        s = raw.split("#", 1)[0].strip()
        if not s:
            continue
        indent = len(raw) - len(raw.lstrip())
        if help_indent is not None:
            if indent > help_indent:
                continue  # help text, which may say "depends on" in prose
            help_indent = None
        word = s.split()[0]
        if word in ("help", "---help---"):
            help_indent = indent
            continue
        if word in ("config", "menuconfig") and len(s.split()) > 1:
            name = s.split()[1]
            cur = entries.setdefault(name, KconfigEntry(name, file))
            cur.file = cur.file or file  # it may have been seen first as a select target
            cur.depends.extend(c for kind, c in blocks if c)
            pending_menu = False
            continue
        if word == "if":
            blocks.append(("if", s[2:].strip()))
            cur = None
        elif word == "endif":
            _pop(blocks, "if")
            cur = None
        elif word == "menu":
            blocks.append(("menu", None))
            pending_menu, cur = True, None
        elif word == "endmenu":
            _pop(blocks, "menu")
            cur = None
        elif word == "choice":
            blocks.append(("choice", None))
            pending_menu, cur = True, None
        elif word == "endchoice":
            _pop(blocks, "choice")
            cur = None
        elif s.startswith("depends on"):
            cond = s[len("depends on"):].strip()
            if cur is not None:
                cur.depends.append(cond)
            elif pending_menu and blocks:
                kind, _ = blocks[-1]
                blocks[-1] = (kind, cond)
        elif word == "select" and cur is not None and len(s.split()) > 1:
            target = s.split()[1]
            by = cur.symbol + (f" if {s.split(' if ', 1)[1]}" if " if " in s else "")
            entries.setdefault(target, KconfigEntry(target, "")).selected_by.append(by)
        elif word in ("source", "comment", "mainmenu"):
            cur = None
    return entries


def _pop(blocks: list[tuple[str, str | None]], kind: str) -> None:
    for i in range(len(blocks) - 1, -1, -1):
        if blocks[i][0] == kind:
            del blocks[i:]
            return


_TOKEN = re.compile(r"\s*(&&|\|\||!=|[!()=<>]=?|\"[^\"]*\"|[A-Za-z0-9_]+)")
_TRI = {"n": 0, "m": 1, "y": 2}


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read Kconfig expression {expr!r} at {pos}")
        out.append(m.group(1))
        pos = m.end()
    return out


def eval_kconfig_expr(expr: str, final: Mapping[str, str]) -> int:
    """A ``depends on`` expression's tristate value (0=n, 1=m, 2=y) under a ``.config``.

    Kconfig's rules: ``!`` is 2-x, ``&&`` the minimum, ``||`` the maximum, ``A=B``/``A!=B``
    compare values (y or n). An unknown symbol is n. Raises ValueError on syntax it cannot read.
    """
    toks = _tokens(expr)
    pos = 0

    def value(tok: str) -> str:
        if tok in _TRI:
            return tok
        if tok.startswith('"'):
            return tok[1:-1]
        if tok.isdigit():
            return tok
        return final.get(f"CONFIG_{tok}", "n")

    def tri(v: str) -> int:
        return _TRI.get(v, 0)

    def primary() -> int:
        nonlocal pos
        if pos >= len(toks):
            raise ValueError(f"Kconfig expression {expr!r} ends early")
        tok = toks[pos]
        pos += 1
        if tok == "!":
            return 2 - primary()
        if tok == "(":
            v = disj()
            if pos >= len(toks) or toks[pos] != ")":
                raise ValueError(f"unbalanced parenthesis in {expr!r}")
            pos += 1
            return v
        if pos < len(toks) and toks[pos] in ("=", "!="):
            op = toks[pos]
            other = toks[pos + 1] if pos + 1 < len(toks) else ""
            pos += 2
            same = value(tok) == value(other)
            return 2 if same == (op == "=") else 0
        return tri(value(tok))

    def conj() -> int:
        nonlocal pos
        v = primary()
        while pos < len(toks) and toks[pos] == "&&":
            pos += 1
            v = min(v, primary())
        return v

    def disj() -> int:
        nonlocal pos
        v = conj()
        while pos < len(toks) and toks[pos] == "||":
            pos += 1
            v = max(v, conj())
        return v

    result = disj()
    if pos != len(toks):
        raise ValueError(f"unexpected {toks[pos]!r} in Kconfig expression {expr!r}")
    return result


def _split_and(expr: str) -> list[str]:
    """Top-level ``&&`` operands of an expression (parentheses respected)."""
    parts, depth, cur = [], 0, ""
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and expr.startswith("&&", i):
            parts.append(cur.strip())
            cur, i = "", i + 2
            continue
        cur += ch
        i += 1
    parts.append(cur.strip())
    return [p for p in parts if p]


def _describe_term(term: str, final: Mapping[str, str]) -> str:
    syms = [t for t in _SYM.findall(term) if t not in _TRI and not t.isdigit()]
    vals = ", ".join(f"{s}={final.get(f'CONFIG_{s}', 'n')}" for s in dict.fromkeys(syms))
    return term if vals == f"{term}={final.get(f'CONFIG_{term}', 'n')}" else f"{term} [{vals}]"


def explain(option: str, entries: Mapping[str, KconfigEntry], final: Mapping[str, str],
            requested: str | None = None) -> str:
    """Why ``option`` is not what was asked: the ``depends on`` terms that are unmet, a selector,
    dependencies that cap it at m, or its absence from the tree."""
    sym = option.removeprefix("CONFIG_")
    entry = entries.get(sym)
    if entry is None or not entry.file:
        return "no such option in this tree's Kconfig"
    terms = [t for d in entry.depends for t in _split_and(d)]
    where = entry.file
    if requested == "n":
        on = [b for b in entry.selected_by if final.get(f"CONFIG_{b.split()[0]}") in ("y", "m")]
        return f"{where}: selected by {', '.join(on)}" if on else f"{where}: set by a default or a selecting option"
    if not terms:
        return f"{where}: no dependencies (a choice or a value the kernel overrides?)"
    low: list[str] = []
    capped: list[str] = []
    for term in terms:
        try:
            v = eval_kconfig_expr(term, final)
        except ValueError:
            continue
        if v == 0:
            low.append(_describe_term(term, final))
        elif v == 1:
            capped.append(_describe_term(term, final))
    if low:
        return f"{where}: unmet dependency " + "; ".join(low)
    if capped and requested == "y":
        return f"{where}: limited to m by " + "; ".join(capped)
    return f"{where}: depends on " + " && ".join(terms)


def read_kconfig_tree(src: Path) -> dict[str, KconfigEntry]:
    """Every ``Kconfig*`` file of a source tree, parsed (about a second for a full tree)."""
    entries: dict[str, KconfigEntry] = {}
    skip = {"tools", "Documentation", "scripts", "samples"}
    for dirpath, dirnames, filenames in os.walk(src):
        if dirpath == str(src):
            dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith(".")]
        if Path(dirpath).parent == src / "arch":
            if Path(dirpath).name not in ("x86",):
                dirnames[:] = []
                continue
        for fn in filenames:
            if fn.startswith("Kconfig"):
                p = Path(dirpath) / fn
                try:
                    parse_kconfig(p.read_text(errors="replace"), str(p.relative_to(src)), entries)
                except OSError:
                    continue
    return entries
