"""Plots for the HTML report: memory per node over a test (a ``stats.timeline``), as PNG bytes.

matplotlib is the ``report`` extra (``pip install numa-harness[report]``; Debian: python3-matplotlib);
without it the report says so instead of a plot.
"""

from __future__ import annotations

import io
from typing import Any

MISSING = "matplotlib is not installed (pip install 'numa-harness[report]' or apt install python3-matplotlib)"


def node_memory_png(timeline: dict[str, Any], title: str) -> bytes:
    """A PNG of used memory (MiB) per node against seconds, from :meth:`Timeline.to_json` data.

    Raises ImportError when matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    samples = timeline.get("samples", [])
    t0 = min((s["t"] for s in samples), default=0.0)
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    try:
        for node in sorted({s["node"] for s in samples}):
            pts = sorted((s["t"] - t0, s["used_kb"] / 1024) for s in samples if s["node"] == node)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"node {node}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("used memory (MiB)")
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
