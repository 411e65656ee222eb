"""KTAP (and kselftest's TAP 13) results: a pure parser from output lines to typed results.

The grammar follows the kernel's Documentation/dev-tools/ktap.rst and what
tools/testing/kunit/kunit_parser.py accepts:

* a version line, ``KTAP version 1`` or ``TAP version 13``/``14``;
* a plan ``1..N`` (``1..0 # SKIP reason`` skips the whole test);
* results ``ok|not ok N [- ]name [# DIRECTIVE [reason]]``, directives ``SKIP``,
  ``TODO``, ``XFAIL``, ``XPASS`` and kselftest's ``error``;
* diagnostics ``# ...`` (kselftest's ``# Totals: pass:.. fail:..`` is read too);
* ``Bail out! reason``;
* nested subtests, indented (KTAP: an indented version line, optionally
  ``# Subtest: name``, its own plan and results, then the parent's result line)
  or, as kselftest's runner prints a test's own TAP, prefixed with ``# ``.

Why not Debian's ``python3-tap`` (tappy, ``tap.parser``): it knows TAP 13
only; it reads an indented line after a result as the start of a YAML block,
not as a subtest, has no ``KTAP version`` line and no ``XFAIL`` directive.
The kernel's own kunit_parser.py is not installable and prints as it parses.
So this is a small parser of our own, modelled on kunit_parser's grammar.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

VERSION = re.compile(r"^(K?TAP) version (\d+)\s*$")
PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#\s*(.*))?$")
RESULT = re.compile(r"^(ok|not ok)\s+(\d+)\b\s*(?:-\s*)?(.*)$")
DIRECTIVE = re.compile(r"(?:^|\s)#\s*(SKIP|TODO|XFAIL|XPASS|error)\S*(?:\s+(.*))?$", re.IGNORECASE)
SUBTEST = re.compile(r"^#\s*Subtest:\s*(.*)$")
BAIL = re.compile(r"^Bail out!\s*(.*)$")
TOTALS = re.compile(r"^#\s*Totals:\s*(.*)$")

#: Statuses that count as a failure of the run.
FAILED = frozenset({"fail", "xpass", "error"})


@dataclass
class KtapResult:
    """One ``ok``/``not ok`` line, with what came before it at its level."""

    number: int
    name: str
    ok: bool
    directive: str | None = None   # SKIP, TODO, XFAIL, XPASS, ERROR (upper case)
    reason: str = ""               # text after the directive
    log: list[str] = field(default_factory=list)   # lines since the previous result (diagnostics, output)
    subtests: KtapReport | None = None
    line: int = 0                  # 1-based line number in the parsed text

    @property
    def status(self) -> str:
        """pass, fail, skip, xfail, xpass, todo or error."""
        d = self.directive
        if d == "SKIP":
            return "skip"
        if d == "TODO":
            return "todo"
        if d == "XFAIL":
            return "xfail" if self.ok else "fail"
        if d == "XPASS":
            return "xpass"
        if d == "ERROR":
            return "error"
        if not self.ok:
            return "fail"
        if self.subtests is not None and self.subtests.failed:
            return "fail"  # a parent that says ok over failed children is not believed
        return "pass"

    @property
    def diagnostics(self) -> list[str]:
        """The ``# ...`` lines in :attr:`log`, without the ``#``."""
        return [ln.lstrip()[1:].strip() for ln in self.log if ln.lstrip().startswith("#")]


@dataclass
class KtapReport:
    """One KTAP document (or a nested subtest's block)."""

    version: str | None = None          # "KTAP version 1", "TAP version 13", or None
    name: str | None = None             # from "# Subtest: name"
    plan: int | None = None
    skip_all: str | None = None         # reason of "1..0 # SKIP reason"
    results: list[KtapResult] = field(default_factory=list)
    log: list[str] = field(default_factory=list)        # lines after the last result
    bail_out: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)     # the document does not follow the grammar

    @property
    def missing(self) -> int:
        """Planned tests with no result line (a crash or timeout part way)."""
        if self.plan is None:
            return 0
        return max(0, self.plan - len(self.results))

    @property
    def failed(self) -> bool:
        return (self.bail_out is not None or self.missing > 0
                or any(r.status in FAILED for r in self.results))

    def walk(self, prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], KtapResult]]:
        """Every result, depth first, children before their parent, with its path of names."""
        for r in self.results:
            path = (*prefix, r.name or f"#{r.number}")
            if r.subtests is not None:
                yield from r.subtests.walk(path)
            yield path, r


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _split_directive(text: str) -> tuple[str, str | None, str]:
    """``"name # SKIP why"`` -> ``("name", "SKIP", "why")``."""
    m = DIRECTIVE.search(text)
    if not m:
        return text.strip(), None, ""
    return text[:m.start()].strip(), m.group(1).upper(), (m.group(2) or "").strip()


def _prefixed_block(lines: list[tuple[int, str]], i: int) -> int:
    """End of a run of ``# ``-prefixed lines starting at ``i`` (kselftest runner nesting)."""
    j = i
    while j < len(lines) and (lines[j][1].lstrip() == "#" or lines[j][1].lstrip().startswith("# ")):
        j += 1
    return j


def _nested(block: list[tuple[int, str]]) -> KtapReport | None:
    """Parse an indented block as a subtest; None if it holds no KTAP at all."""
    if not block:
        return None
    cut = min(_indent(t) for _, t in block if t.strip())
    nested = _parse([(n, t[cut:]) for n, t in block])
    if nested.version or nested.plan is not None or nested.results:
        return nested
    return None


def _parse(lines: list[tuple[int, str]]) -> KtapReport:
    """Parse one level: ``lines`` are (line number, text) with this level's indentation removed."""
    rep = KtapReport()
    pending: list[str] = []
    # Indented lines since the last result: the next result's subtests. Kept as lines and
    # parsed at that result, because a test's own output may interrupt the block
    # (KUnit's "init_suite" at a lower indentation, seen in real logs).
    block: list[tuple[int, str]] = []
    prefixed: KtapReport | None = None
    expected = 1
    i = 0
    while i < len(lines):
        lineno, text = lines[i]
        if not text.strip():
            i += 1
            continue
        if _indent(text) > 0:
            block.append((lineno, text))
            i += 1
            continue
        s = text.strip()
        m = VERSION.match(s)
        if m and rep.version is None and not rep.results and not block:
            rep.version = f"{m.group(1)} version {m.group(2)}"
            i += 1
            continue
        if re.match(r"^#\s*(K?TAP) version \d+\s*$", s):
            # kselftest's runner: a test's own TAP, each line prefixed with "# "
            j = _prefixed_block(lines, i)
            prefixed = _parse([(n, re.sub(r"^\s*#( |$)", "", t, count=1)) for n, t in lines[i:j]])
            pending.extend(t.strip() for _, t in lines[i:j])
            i = j
            continue
        m = SUBTEST.match(s)
        if m and rep.name is None and not rep.results:
            rep.name = m.group(1).strip()
            i += 1
            continue
        m = PLAN.match(s)
        if m:
            if rep.plan is not None:
                rep.errors.append(f"line {lineno}: a second plan {s!r}")
            rep.plan = int(m.group(1))
            why = (m.group(2) or "").strip()
            if rep.plan == 0 and why.upper().startswith("SKIP"):
                rep.skip_all = why[4:].strip()
            i += 1
            continue
        m = RESULT.match(s)
        if m:
            name, directive, reason = _split_directive(m.group(3))
            number = int(m.group(2))
            if number != expected:
                rep.errors.append(f"line {lineno}: test number {number}, expected {expected}")
            expected = number + 1
            nested = _nested(block)
            if block and nested is None:
                pending.extend(t.strip() for _, t in block)
            children = nested or prefixed
            res = KtapResult(number=number, name=name, ok=m.group(1) == "ok", directive=directive,
                             reason=reason, log=pending, subtests=children, line=lineno)
            if children is not None and not res.name and children.name:
                res.name = children.name
            rep.results.append(res)
            pending, block, prefixed = [], [], None
            i += 1
            continue
        m = BAIL.match(s)
        if m:
            rep.bail_out = m.group(1).strip() or "(no reason given)"
            pending.append(s)
            i += 1
            continue
        m = TOTALS.match(s)
        if m:
            rep.totals = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m.group(1))}
        pending.append(s)
        i += 1
    children = _nested(block) or prefixed
    if children is not None:
        # subtests with no result line after them: their parent never finished
        rep.errors.append(f"subtest {children.name or '(unnamed)'} has no result line")
        rep.results.append(KtapResult(number=expected, name=children.name or "", ok=False,
                                      reason="no result line after its subtests", log=pending,
                                      subtests=children, line=lines[-1][0]))
        pending = []
    elif block:
        pending.extend(t.strip() for _, t in block)
    rep.log = pending
    if rep.plan is not None and len(rep.results) != rep.plan and rep.bail_out is None:
        rep.errors.append(f"planned {rep.plan} tests, saw {len(rep.results)}")
    return rep


KERNEL_PREFIX = re.compile(r"^\[\s*\d+\.\d+\] ?")


def parse_ktap(text: str | Iterable[str], *, dmesg: bool = False) -> KtapReport:
    """Parse KTAP output (a string or its lines). Never raises on bad input: see ``.errors``.

    Lines before the version line that are not KTAP (a shell's noise) end up in the first
    result's ``log``. Tabs count as 8 columns of indentation. ``dmesg=True`` strips the
    kernel log's ``[   0.060000] `` time stamps first (KUnit results read from dmesg).
    """
    raw = text.splitlines() if isinstance(text, str) else [ln.rstrip("\n") for ln in text]
    if dmesg:
        raw = [KERNEL_PREFIX.sub("", ln, count=1) for ln in raw]
    lines = [(n, ln.rstrip("\r").expandtabs(8)) for n, ln in enumerate(raw, 1)]
    return _parse(lines)
