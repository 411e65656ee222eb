"""The contract report: verdicts -> a markdown table a reviewer can paste into a list reply, and JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .isolation import Comparison
from .verdicts import PROMISES, Verdict

MARK = {"pass": "PASS", "fail": "**FAIL**", "skip": "skip", "xfail": "leaks (expected)", "xpass": "**no leak (check toothless)**"}


@dataclass
class Section:
    topology: str
    kernel: str
    provisioned: list[str]           # what the guest set-up did (``provision`` lines), for the header
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None         # the topology could not be run (boot failure ...)
    reproduce: str = ""              # one command that re-runs this section


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(sections: Iterable[Section]) -> str:
    sections = list(sections)
    kernels = sorted({s.kernel for s in sections})
    counts = Counter(v.outcome for s in sections for v in s.verdicts)
    out = [f"### Private/managed node contract: kernel {', '.join(kernels)}", "",
           "Outcomes: " + ", ".join(f"{MARK[k]} {n}" for k, n in sorted(counts.items())) + ". "
           "Controls are ordinary nodes: their isolation checks must leak (that is what shows a check can fail); "
           "their opt-in checks must behave as on any node.", ""]
    for s in sections:
        out.append(f"#### {s.topology}" + (f" ({'; '.join(s.provisioned)})" if s.provisioned else ""))
        out.append("")
        if s.error:
            out += [f"not run: {_cell(s.error)}", ""]
            continue
        out += ["| promise | node | capability | observed | outcome |", "|---|---|---|---|---|"]
        for target in dict.fromkeys(v.target for v in s.verdicts):
            vs = [v for v in s.verdicts if v.target == target]
            if len(vs) > 1 and {v.outcome for v in vs} == {"skip"} and len({v.observed for v in vs}) == 1:
                v = vs[0]
                out.append(f"| all {len(vs)} promises | {_cell(v.target)} | {_cell(v.capability)} | {_cell(v.observed)} "
                           f"| {MARK['skip']} |")
                continue
            out += [f"| {_cell(PROMISES[v.promise].text)} | {_cell(v.target)} | {_cell(v.capability)} | "
                    f"{_cell(v.observed)} | {MARK[v.outcome]} |" for v in vs]
        out.append("")
    found = findings(sections)
    if found:
        out += ["### Findings (text for a reply on the list)", "", found]
    return "\n".join(out)


def findings(sections: Iterable[Section]) -> str:
    """One paragraph per broken promise on a private node (and per check a control proved toothless):
    the promise, what was done and observed, and the one command that reproduces it."""
    out = []
    for s in sections:
        for v in s.verdicts:
            if v.outcome not in ("fail", "xpass"):
                continue
            head = ("The check could not fail here" if v.outcome == "xpass" else "The series does not keep this "
                    "promise")
            out.append(f"- **{PROMISES[v.promise].text}** ({v.promise}; kernel {s.kernel}, `{s.topology}`, "
                       f"{v.target}, {v.capability}). {head}: {v.observed}."
                       + (f" Reproduce: `{s.reproduce}`" if s.reproduce else ""))
    return "\n".join(out)


def to_json(sections: Iterable[Section]) -> dict[str, Any]:
    return {"sections": [{"topology": s.topology, "kernel": s.kernel, "provisioned": s.provisioned, "error": s.error,
                          "reproduce": s.reproduce, "verdicts": [v.to_json() for v in s.verdicts]} for s in sections]}


def comparison_rows(c: Comparison) -> list[list[str]]:
    """The compare-isolation table's rows (mode, set-up, workload outcome, user pages, numa_miss,
    kernel kB with its slab / page tables / kernel stack parts, notes), for the CLI's table and tests."""
    rows = []
    for m in c.modes:
        if not m.measured:
            rows.append([f"({m.mode})", m.label, "skipped", "—", "—", "—", f"skipped: {m.reason}"])
            continue
        parts = " / ".join(f"{v:+d}" for v in m.kernel_parts.values())
        rows.append([f"({m.mode})", m.label, m.reason, "—" if m.user_pages is None else str(m.user_pages),
                     f"+{m.numa_miss}", f"{m.kernel_kb:+d} ({parts})", m.notes])
    return rows
