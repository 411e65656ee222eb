"""The run's HTML page (``--html-report PATH``): one self-contained file, plots embedded as base64 PNG.

A summary (counts, the kernel problems of the whole run), then per test: the verdict, its
properties (topology, kernel, accelerator, QEMU, boot time), the failure and its diagnostics, the
bundle's folder, and a plot of memory per node for each ``stats.timeline`` it ran. Pure: records in,
HTML out (:func:`render`).
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from typing import Any

from harness.plugin.plots import MISSING, node_memory_png

COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#9a6700",
           "xfailed": "#6e7781", "xpassed": "#9a6700"}

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 72em; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: 85%; max-height: 30em; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d7de; padding: .2em .5em; text-align: left; }
.test { border-top: 1px solid #d0d7de; margin-top: 1em; padding-top: .5em; }
.verdict { font-weight: bold; text-transform: uppercase; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _plot(timeline: dict[str, Any], title: str) -> str:
    try:
        png = node_memory_png(timeline, title)
    except ImportError:
        return f"<p><em>{_e(MISSING)}</em></p>"
    data = base64.b64encode(png).decode()
    return f'<p><img alt="{_e(title)}" src="data:image/png;base64,{data}"></p>'


def _test(rec: dict[str, Any]) -> str:
    colour = COLOURS.get(rec["outcome"], "#000")
    parts = [f'<div class="test" id="{_e(rec["label"])}"><span class="verdict" style="color:{colour}">'
             f'{_e(rec["outcome"])}</span> <code>{_e(rec["label"])}</code> ({rec["duration"]:.1f} s)']
    props = [p for p in rec["properties"] if not str(p[0]).startswith("ktap ")]
    if props:
        parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in props)
                     + "</table>")
    if rec["outcome"] in ("failed", "error") and rec["longrepr"]:
        parts.append(f"<pre>{_e(rec['longrepr'])}</pre>")
    elif rec["outcome"] in ("skipped", "xfailed") and rec["longrepr"]:
        parts.append(f"<p>{_e(rec['longrepr'].strip().splitlines()[-1])}</p>")
    if rec["bundle"]:
        parts.append(f"<p>failure bundle: <code>{_e(rec['bundle'])}</code> (reproduce: "
                     f"<code>{_e(rec['bundle'])}/reproduce.sh</code>)</p>")
    for tl in rec["timelines"]:
        title = f"{rec['nodeid'].rsplit('::', 1)[-1]}\n{tl.get('label', '')}: used memory per node"
        parts.append(_plot(tl, title))
    parts.append("</div>")
    return "\n".join(parts)


def render(tests: list[dict[str, Any]], problems: list[dict[str, Any]], *, failed_on_problems: bool = False) -> str:
    """The whole page."""
    counts = Counter(t["outcome"] for t in tests)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>numa-harness run</title>',
           f"<style>{STYLE}</style></head><body>", "<h1>numa-harness run</h1>", f"<p>{_e(summary or 'no tests')}</p>"]
    props: dict[str, set[str]] = {}
    for t in tests:
        for k, v in t["properties"]:
            if k in ("topology", "kernel_release", "accel", "qemu_version"):
                props.setdefault(k, set()).add(str(v))
    if props:
        out.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(', '.join(sorted(v)))}</td></tr>"
                                       for k, v in sorted(props.items())) + "</table>")
    out.append("<h2>Kernel problems</h2>")
    if problems:
        out.append("<table><tr><th>machine</th><th>kind</th><th>line</th><th>where</th></tr>")
        for p in problems:
            where = p["test"] or "outside any test (boot, set-up, between tests)"
            note = " (expected by the test)" if p["expected"] else ""
            out.append(f"<tr><td>{_e(p['machine'])}</td><td>{_e(p['kind'])}</td><td><code>{_e(p['line'])}</code>"
                       f"</td><td>{_e(where)}{_e(note)}</td></tr>")
        out.append("</table>")
        if failed_on_problems:
            out.append("<p><strong>The run fails on the problems no test expected.</strong></p>")
    else:
        out.append("<p>none</p>")
    out.append("<h2>Tests</h2>")
    out += [_test(t) for t in tests]
    out.append("</body></html>")
    return "\n".join(out)
