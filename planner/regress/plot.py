"""The comparison as a PNG dumbbell plot: one line per scenario from the base peak (hollow ring) to the new
peak (filled dot, red for a regression, green for an improvement), with base -> new GiB, delta and verdict
in an aligned column on the right. Log x axis when the peaks span more than 8x. matplotlib is imported
only here, when a report is asked for (``pip install 'qplan[report]'``)."""

from __future__ import annotations

import io
from pathlib import Path

from planner.errors import QPlanError
from planner.inputs.units import gib
from planner.regress.compare import FAILING, METRIC_LABELS, Comparison

BAD, GOOD, NEUTRAL = "#c62828", "#2e7d32", "#616161"


def _color(verdict: str) -> str:
    return BAD if verdict in FAILING else GOOD if verdict in ("improved", "fixed") else NEUTRAL


def plot_png(comp: Comparison) -> bytes:
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    except ImportError:
        raise QPlanError("reports need matplotlib: pip install 'qplan[report]'") from None

    rows = [row for row in comp.rows if row.base_bytes is not None or row.new_bytes is not None]
    fig = Figure(figsize=(12, 1.6 + 0.45 * max(1, len(rows))), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    values = [gib(v) for row in rows for v in (row.base_bytes, row.new_bytes) if v]
    low, high = min(values or [1.0]), max(values or [1.0])
    for y, row in enumerate(reversed(rows)):
        color = _color(row.verdict)
        b = gib(row.base_bytes) if row.base_bytes is not None else None
        n = gib(row.new_bytes) if row.new_bytes is not None else None
        if b is not None and n is not None:
            ax.plot([b, n], [y, y], color=color, linewidth=3, alpha=0.45, solid_capstyle="round", zorder=1)
        if b is not None:
            ax.scatter([b], [y], s=130, marker="X" if row.base_status == "oom" else "o",
                       facecolors="white", edgecolors=NEUTRAL, linewidths=1.8, zorder=2)
        if n is not None:  # drawn smaller than the base ring, so an unchanged peak shows as a dot in a ring
            ax.scatter([n], [y], s=45, marker="X" if row.new_status == "oom" else "o", color=color, zorder=3)
        base_text, new_text, delta, pct = row.cells()
        label = f"{base_text} -> {new_text} GiB"
        if delta:
            label += f"  ({delta} GiB, {pct})"
        ax.annotate(f"{label}  {row.verdict}", (1.02, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize=8.5, color=color, fontweight="bold" if row.verdict in FAILING else "normal",
                    annotation_clip=False)  # one aligned column of numbers right of the plot
    ax.set_yticks(range(len(rows)), [row.scenario for row in reversed(rows)])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    scale = ""
    if high > 8 * low:  # peaks an order of magnitude apart: a linear axis would flatten the small ones
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(low / 1.3, high * 1.3)
        scale = ", log scale"
    else:
        ax.set_xlim(0, high * 1.1)
    ax.set_xlabel(f"{METRIC_LABELS[comp.metric]}, GiB (2**30 bytes){scale}")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{Path(comp.base_path).name} (hollow) -> {Path(comp.new_path).name} (filled): {comp.summary.split(':')[0]}",
                 loc="left", fontsize=11)
    fig.legend(handles=[
        Line2D([], [], marker="o", markersize=10, linestyle="", markerfacecolor="white", markeredgecolor=NEUTRAL, label="base"),
        Line2D([], [], marker="o", linestyle="", color=BAD, label="new: worse"),
        Line2D([], [], marker="o", linestyle="", color=GOOD, label="new: better"),
        Line2D([], [], marker="o", linestyle="", color=NEUTRAL, label="new: within tolerance"),
        Line2D([], [], marker="X", linestyle="", color=NEUTRAL, label="out of memory"),
    ], loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
