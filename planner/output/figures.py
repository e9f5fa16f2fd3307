"""The plan's pictures (``qplan ... --report plan.html|plan.png``): matplotlib figures built from plain numbers,
so that each panel can be checked on its own and drawn from other sources later. All sizes in GiB (2**30 bytes).

- :func:`breakdown_axes`: the memory at the peak as one stacked bar (each component of ``Plan.breakdown``),
  the safety margin hatched on top, the card's usable memory and budget as lines, headroom or overflow labelled.
- :func:`timeline_axes`: memory over one optimizer step, from any list of ``(label, bytes)`` points: the
  analytic phases today (load, forward, backward, optimizer), a traced timeline (``planner/trace``) later.
- :func:`seq_len_axes`: peak against seq_len, one line per LoRA rank, a point where qplan priced it (filled
  where it fits, hollow where it does not), with the card's budget.

matplotlib is imported only inside these functions, with the Agg backend (no display needed), so that
planning without ``--report`` never loads it (nor numpy)."""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

from planner.errors import QPlanError
from planner.inputs.units import gib

MISSING = 'reports need matplotlib: pip install "qplan[report]"'
FITS, OVER, CARD, BUDGET, MARGIN = "#2e7d32", "#c62828", "#212121", "#c62828", "#616161"
GIB_LABEL = "GiB (2**30 bytes)"

# Component -> colour family, so that the stack reads as four groups: the frozen base, what training adds,
# what the step computes, and what CUDA and the allocator keep beside the tensors.
FROZEN = ("weights", "embeddings", "lm_head", "norms, biases", "bf16 copy", "quant_state")
OVERHEAD = ("cuBLAS", "fragmentation", "CUDA context", "NCCL")
TRAINING = ("LoRA", "trainable", "optimizer", "gradients", "autocast copies")
FAMILIES = {"frozen": "Blues", "training": "Greens", "step": "Oranges", "overhead": "Greys"}


def family(component: str) -> str:
    """Which colour family a breakdown component belongs to (by its name, as planner.memory names them)."""
    lowered = component.lower()
    if "autocast" in lowered and "lora" not in lowered:  # lm_head's bf16 copy: made by the step, not stored
        return "step"
    if any(word.lower() in lowered for word in OVERHEAD):
        return "overhead"
    if any(word.lower() in lowered for word in TRAINING) and "lm_head" not in lowered:
        return "training"
    if any(word.lower() in lowered for word in FROZEN) and "dequantized" not in lowered:
        return "frozen"
    return "step"


@dataclass
class Curve:
    """One line of :func:`seq_len_axes`: ``(seq_len, peak bytes, fits)`` for each priced point."""

    label: str
    points: list[tuple[int, int, bool]]
    chosen: bool = False  # the plan's own rank


@dataclass
class Card:
    """The card's lines: usable memory and the budget (usable, or less ``--margin``)."""

    label: str
    usable_bytes: int
    budget_bytes: int
    per_gpu: bool = False  # one of several GPUs: every number is per GPU


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise QPlanError(MISSING) from None
    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    return Figure


def _colors(names: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    colors = {}
    for fam, cmap_name in FAMILIES.items():
        members = [name for name in names if family(name) == fam]
        cmap = colormaps[cmap_name]
        for i, name in enumerate(members):  # from dark to light, never white
            colors[name] = cmap(0.85 - 0.55 * i / max(1, len(members) - 1) if len(members) > 1 else 0.7)
    return colors


def _card_lines(ax, card: Card, *, text: bool = True) -> None:
    same = card.usable_bytes == card.budget_bytes
    ax.axhline(gib(card.usable_bytes), color=CARD, linewidth=1.6, gid="usable",
               label=f"usable{' = budget' if same else ''}: {gib(card.usable_bytes):.2f}")
    if not same:
        ax.axhline(gib(card.budget_bytes), color=BUDGET, linewidth=1.4, linestyle="--", gid="budget",
                   label=f"budget (less --margin): {gib(card.budget_bytes):.2f}")


def _style(ax) -> None:
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def breakdown_axes(ax, breakdown: dict[str, int], margin_bytes: int, card: Card) -> None:
    """One stacked bar: each component (bottom up, in the breakdown's order), the margin hatched on top of the
    peak, the card's lines, and the headroom (green) or overflow (red) between the top and the budget."""
    colors = _colors(list(breakdown))
    bottom = 0.0
    for name, size in breakdown.items():
        ax.bar(0, gib(size), bottom=bottom, width=0.55, color=colors[name], edgecolor="white", linewidth=0.4,
               label=textwrap.fill(f"{name}: {gib(size):.2f}", 46, subsequent_indent="  "), gid=f"component:{name}")
        bottom += gib(size)
    peak = bottom
    if margin_bytes:
        ax.bar(0, gib(margin_bytes), bottom=peak, width=0.55, facecolor="white", edgecolor=MARGIN, hatch="///",
               linewidth=0.8, label=f"safety margin: {gib(margin_bytes):.2f}", gid="margin")
    required = peak + gib(margin_bytes)
    budget = gib(card.budget_bytes)
    _card_lines(ax, card)
    fits = required <= budget
    color = FITS if fits else OVER
    ax.annotate("", xy=(0.42, budget), xytext=(0.42, required),
                arrowprops={"arrowstyle": "<->", "color": color, "linewidth": 1.4, "shrinkA": 0, "shrinkB": 0})
    words = f"headroom\n{budget - required:.2f} GiB" if fits else f"over by\n{required - budget:.2f} GiB"
    top = max(required, gib(card.usable_bytes)) * 1.08
    low, high = sorted((budget, required))
    # a gap too small to hold the words gets them just below it, clear of the card's line
    y, va = ((low + high) / 2, "center") if high - low > 0.08 * top else (low - 0.01 * top, "top")
    ax.text(0.47, y, words, color=color, fontsize=9, fontweight="bold", va=va, gid="headroom" if fits else "overflow")
    ax.text(-0.32, peak, f"peak\n{peak:.2f}", ha="right", va="center", fontsize=9, fontweight="bold", gid="peak")
    ax.set_xlim(-0.85, 1.1)
    ax.set_ylim(0, top)
    ax.set_xticks([])
    ax.set_ylabel(f"memory on {'each GPU' if card.per_gpu else 'the device'}, {GIB_LABEL}")
    ax.set_title("At the peak, against the card", loc="left", fontsize=11)
    _style(ax)


def timeline_axes(ax, points: list[tuple[str, int]], card: Card, *, stacks: list[dict[str, int]] | None = None,
                  device_peak: int | None = None, title: str = "Over one optimizer step",
                  ylabel: str = f"torch allocated, {GIB_LABEL}") -> None:
    """Memory over a step: a line through ``(label, bytes)`` points, in order, with the card's lines. This is the
    hook for a traced timeline: any number of points works. ``stacks`` (one ``component -> bytes`` per point)
    draws what each point is made of, grouped by :func:`family`, as bars behind the line; ``device_peak`` marks
    what nvidia-smi would show at the highest point (allocator slack, CUDA context and paged state on top)."""
    xs = list(range(len(points)))
    values = [gib(b) for _, b in points]
    if stacks:
        if len(stacks) != len(points):
            raise ValueError("one stack per point")
        groups = [fam for fam in FAMILIES if any(family(n) == fam and v for s in stacks for n, v in s.items())]
        bottoms = [0.0] * len(points)
        from matplotlib import colormaps

        for fam in groups:
            heights = [gib(sum(v for n, v in s.items() if family(n) == fam)) for s in stacks]
            ax.bar(xs, heights, bottom=bottoms, width=0.6, color=colormaps[FAMILIES[fam]](0.45), alpha=0.75,
                   label=_FAMILY_WORDS[fam], gid=f"stack:{fam}")
            bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.plot(xs, values, color=CARD, marker="o", linewidth=2, gid="timeline", label="peak of each phase")
    for x, v in zip(xs, values):
        ax.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8.5)
    if device_peak is not None and points:
        top = max(xs, key=values.__getitem__)
        ax.scatter([top + 0.2], [gib(device_peak)], marker="v", s=60, color=OVER, zorder=4, gid="device-peak",
                   label=f"device peak (nvidia-smi): {gib(device_peak):.2f}")
    _card_lines(ax, card)
    high = max([*values, gib(device_peak or 0), gib(card.usable_bytes)])
    ax.set_ylim(0, high * 1.12)
    ax.set_xticks(xs, [label for label, _ in points])
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncols=2, fontsize=7.5, frameon=False)
    _style(ax)


_FAMILY_WORDS = {"frozen": "frozen base model", "training": "adapters, gradients, optimizer",
                 "step": "activations and working sets", "overhead": "workspace and allocator"}


def seq_len_axes(ax, curves: list[Curve], card: Card, *, chosen: tuple[int, int] | None = None,
                 title: str = "Peak against seq_len") -> None:
    """One line per curve through its priced points: filled where the plan fits (peak + margin within the
    budget), hollow where it does not; the card's lines; a star at the plan's own settings."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    every = sorted({s for c in curves for s, _, _ in c.points})
    peaks = [gib(p) for c in curves for _, p, _ in c.points]
    for i, curve in enumerate(curves):
        color = cmap(0.1 + 0.75 * i / max(1, len(curves) - 1)) if len(curves) > 1 else cmap(0.3)
        xs = [s for s, _, _ in curve.points]
        ys = [gib(p) for _, p, _ in curve.points]
        ax.plot(xs, ys, color=color, linewidth=2.4 if curve.chosen else 1.5, label=curve.label, gid=f"curve:{curve.label}")
        fit_x = [s for s, _, f in curve.points if f]
        fit_y = [gib(p) for _, p, f in curve.points if f]
        over_x = [s for s, _, f in curve.points if not f]
        over_y = [gib(p) for _, p, f in curve.points if not f]
        ax.scatter(fit_x, fit_y, color=color, s=36, zorder=3)
        ax.scatter(over_x, over_y, facecolors="white", edgecolors=color, s=36, linewidths=1.4, zorder=3)
    if chosen:
        ax.scatter([chosen[0]], [gib(chosen[1])], marker="*", s=220, color="#f9a825", edgecolors=CARD,
                   linewidths=0.8, zorder=5, gid="chosen", label="this plan")
    _card_lines(ax, card)
    ax.scatter([], [], color=MARGIN, s=36, label="fits with its margin")
    ax.scatter([], [], facecolors="white", edgecolors=MARGIN, s=36, label="does not fit")
    if every:
        ax.set_xscale("log", base=2)
        ax.set_xticks(every, [str(s) for s in every])
        ax.minorticks_off()
    budget = gib(card.usable_bytes)
    top = min(max(peaks or [budget]), 2.5 * budget)  # a long context's peak would flatten the rest
    ax.set_ylim(0, max(top, budget) * 1.08)
    if peaks and max(peaks) > ax.get_ylim()[1]:
        ax.text(0.99, 0.98, f"lines leave the top: peaks up to {max(peaks):.0f} GiB", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color=MARGIN, gid="clipped")
    ax.set_xlabel("seq_len (tokens per sequence), the recommender's grid")
    ax.set_ylabel(f"peak on {'each GPU' if card.per_gpu else 'the device'}, {GIB_LABEL}")
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(loc="upper left", fontsize=8, ncols=2, framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    _style(ax)


@dataclass
class Figures:
    """Everything the plan's figure needs, as plain numbers (built by planner.output.report)."""

    title: str
    card: Card
    breakdown: dict[str, int]
    margin_bytes: int
    phases: list[tuple[str, int]]
    phase_stacks: list[dict[str, int]] | None
    device_peak: int
    curves: list[Curve]
    chosen: tuple[int, int] | None
    curves_title: str = "Peak against seq_len"


def plan_figure(data: Figures):
    """The plan's figure: the breakdown bar (left, legend beside it), the step (right), seq_len (below)."""
    Figure = _matplotlib()
    fig = Figure(figsize=(12, 10), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=(1.1, 1.5, 2.4), height_ratios=(1.15, 1))
    bar = fig.add_subplot(grid[0, 0])
    breakdown_axes(bar, data.breakdown, data.margin_bytes, data.card)
    handles, labels = bar.get_legend_handles_labels()
    lines = [i for i, h in enumerate(handles) if h in bar.lines]  # the card's lines head the list, as on the bar
    order = lines + [i for i in reversed(range(len(handles))) if i not in lines]
    legend = fig.add_subplot(grid[0, 1])  # the components' names need room; an empty axes gives them a column
    legend.axis("off")
    legend.legend([handles[i] for i in order], [labels[i] for i in order], loc="center left", fontsize=8, frameon=False,
                  title="GiB, top to bottom", title_fontsize=8.5, alignment="left")
    step = fig.add_subplot(grid[0, 2])
    timeline_axes(step, data.phases, data.card, stacks=data.phase_stacks, device_peak=data.device_peak)
    curves = fig.add_subplot(grid[1, :])
    seq_len_axes(curves, data.curves, data.card, chosen=data.chosen, title=data.curves_title)
    title = "\n".join(textwrap.fill(line, 118) for line in data.title.splitlines())
    fig.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    return fig


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
