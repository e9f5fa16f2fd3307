"""``qplan ... --report plan.html`` (one self-contained page: the verdict, the figure inlined as a PNG data URI,
the breakdown, the recommendations and the notes; no external resources) or ``--report plan.png`` (the figure
alone). Sizes in GiB (2**30 bytes). Written through planner.files: an existing file only with ``--force``.

The figure (planner.output.figures) takes plain numbers. Besides the plan's own, two sets come from pricing
again here, so that the plan's JSON contract stays as it is:

- the components of each phase (load, forward, backward, optimizer): the plan's settings through the same
  estimator that priced them (used only when its phase totals are the plan's);
- peak against seq_len: the recommender's seq_len grid (``doubling_seq_lens``) for each rank the plan
  recommends (or its own), every other setting as in the plan.
"""

from __future__ import annotations

import base64
import html
import importlib.util
from pathlib import Path

from planner.errors import QPlanError
from planner.files import check_output, write_files
from planner.inputs.units import gib
from planner.memory.overhead import select_profile
from planner.output.figures import MISSING, Card, Curve, Figures
from planner.output.plan import Plan
from planner.pricing.price import PlanRequest, estimator_for
from planner.search.grid import doubling_seq_lens

REPORT_SUFFIXES = (".html", ".png")


def check_report_path(path: str | Path, force: bool) -> Path:
    """Refuse before any work: a suffix other than .html or .png, a file that may not be written, no matplotlib."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise QPlanError(f"--report {path}: name it .html (a page) or .png (the figure alone)")
    check_output(path, force=force)
    if importlib.util.find_spec("matplotlib") is None:
        raise QPlanError(MISSING)
    return path


def _rank_label(settings) -> str:
    return "full fine-tune" if settings.full_finetune else f"r={settings.rank}"


def seq_len_curves(plan: Plan, request: PlanRequest) -> list[Curve]:
    """Peak against seq_len for each of the plan's ranks (those recommended, and its own), priced by the
    estimator that priced the plan over the recommender's grid (plus the plan's own seq_len)."""
    profile = select_profile(request.gpu.label, request.profile)
    estimator = estimator_for(request.arch, profile, request.parallel, request.margin)
    s = plan.settings
    lengths = sorted({*doubling_seq_lens(request.arch.max_positions), s.seq_len})
    if s.full_finetune:
        ranks = [s.rank]
    else:
        ranks = sorted({s.rank, *(r.settings.rank for r in plan.recommendations)})
    curves = []
    for rank in ranks:
        points = []
        for seq_len in lengths:
            est = estimator(s.model_copy(update={"rank": rank, "seq_len": seq_len}))
            points.append((seq_len, est.device_peak, est.required_bytes <= plan.gpu.budget_bytes))
        label = "full fine-tune" if s.full_finetune else f"r={rank}"
        curves.append(Curve(label=label, points=points, chosen=rank == s.rank))
    return curves


def phase_stacks(plan: Plan, request: PlanRequest) -> list[dict[str, int]] | None:
    """Each phase's components, from the plan's settings priced again; None unless they add up to the plan's
    phases (a plan re-priced by another estimator keeps its totals and is drawn without them)."""
    profile = select_profile(request.gpu.label, request.profile)
    est = estimator_for(request.arch, profile, request.parallel, request.margin)(plan.settings)
    if est.phase_totals() != plan.phases:
        return None
    return [est.phases[phase] for phase in plan.phases]


def _describe(plan: Plan) -> str:
    m, g, s = plan.model, plan.gpu, plan.settings
    gpus = f"{g.count} x " if g.count > 1 else ""
    return (f"{m.name} on {gpus}{g.label}: {_rank_label(s)}, seq_len {s.seq_len}, micro-batch {s.batch} x "
            f"grad-accum {s.grad_accum}, {s.optim}, checkpointing {'on' if s.gradient_checkpointing else 'off'}")


def _verdict(plan: Plan) -> str:
    if plan.fits:
        return f"FITS with {gib(plan.headroom_bytes):.2f} GiB headroom beyond the margin"
    return f"DOES NOT FIT: {gib(-plan.headroom_bytes):.2f} GiB over, counting the safety margin"


def figures_data(plan: Plan, request: PlanRequest) -> Figures:
    s = plan.settings
    curves = seq_len_curves(plan, request)
    card = Card(label=plan.gpu.label, usable_bytes=plan.gpu.usable_bytes, budget_bytes=plan.gpu.budget_bytes,
                per_gpu=plan.gpu.count > 1)
    others = (f"micro-batch {s.batch}, grad-accum {s.grad_accum}, {s.optim}, "
              f"checkpointing {'on' if s.gradient_checkpointing else 'off'}, {s.attn}")
    per_gpu = " per GPU" if plan.gpu.count > 1 else ""
    return Figures(
        title=f"{_describe(plan)}\n{_verdict(plan)}", card=card, breakdown=plan.breakdown,
        margin_bytes=plan.margin_bytes, phases=list(plan.phases.items()), phase_stacks=phase_stacks(plan, request),
        device_peak=plan.peak_bytes, curves=curves, chosen=(s.seq_len, plan.peak_bytes),
        curves_title=f"Peak{per_gpu} against seq_len, one line per rank ({others})",
    )


def plan_png(plan: Plan, request: PlanRequest) -> bytes:
    from planner.output.figures import plan_figure, png_bytes

    return png_bytes(plan_figure(figures_data(plan, request)))


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:76em;color:#212121}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#c62828;font-weight:bold}
.good{color:#2e7d32;font-weight:bold}img{max-width:100%;height:auto}tr.total td{font-weight:bold}
.dim{color:#616161}"""


def html_report(plan: Plan, png: bytes) -> str:
    e = html.escape
    g = plan.gpu

    def num(nbytes: int) -> str:
        return f"<td class='num'>{gib(nbytes):.2f}</td>"

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>qplan: {e(plan.model.name)} on {e(g.label)}</title><style>{CSS}</style></head><body>",
        f"<h1>qplan: {e(plan.model.name)} on {e(g.label)}</h1>",
        f"<p>{e(_describe(plan))} ({plan.model.params / 1e9:.2f} B params; card {gib(g.total_bytes):.2f} GiB, "
        f"{gib(g.usable_bytes):.2f} usable, budget {gib(g.budget_bytes):.2f})</p>",
        f"<p><span class='{'good' if plan.fits else 'bad'}'>{e(_verdict(plan))}</span>; peak {gib(plan.peak_bytes):.2f} GiB "
        f"in the {e(plan.peak_phase)} phase, safety margin {gib(plan.margin_bytes):.2f} GiB ({e(g.margin_rule)})</p>",
        f"<img alt='memory at the peak against the card, over one optimizer step, and against seq_len for each "
        f"rank' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
        "<h2>Memory at the peak, GiB</h2><table><tr><th>component</th><th>GiB</th></tr>",
    ]
    parts += [f"<tr><td>{e(name)}</td>{num(size)}</tr>" for name, size in plan.breakdown.items()]
    parts += [
        f"<tr class='total'><td>peak on the device (nvidia-smi)</td>{num(plan.peak_bytes)}</tr>",
        f"<tr><td>torch max_memory_allocated</td>{num(plan.allocated_peak_bytes)}</tr>",
        f"<tr><td>torch max_memory_reserved</td>{num(plan.reserved_peak_bytes)}</tr>",
        f"<tr><td>safety margin</td>{num(plan.margin_bytes)}</tr></table>",
        "<h2>Each phase's peak, GiB (torch allocated)</h2><table><tr>"
        + "".join(f"<th>{e(p)}</th>" for p in plan.phases) + "</tr><tr>"
        + "".join(num(b) for b in plan.phases.values()) + "</tr></table>",
    ]
    if plan.recommendations:
        head = ("r", "seq_len", "micro-batch", "grad-accum", "checkpointing", "optimizer", "peak GiB", "spare GiB")
        parts.append("<h2>Settings that fit, best first</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
        for rec in plan.recommendations:
            s = rec.settings
            cells = ("full" if s.full_finetune else s.rank, s.seq_len, s.batch, s.grad_accum,
                     "on" if s.gradient_checkpointing else "off", s.optim)
            parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells)
                         + num(rec.peak_bytes) + num(rec.headroom_bytes) + "</tr>")
        parts.append("</table>")
    if plan.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in plan.notes) + "</ul>")
    if plan.alternatives:
        parts.append("<h2>What would work instead</h2><ul>"
                     + "".join(f"<li>{e(a.summary)}</li>" for a in plan.alternatives) + "</ul>")
    p = plan.profile
    parts.append(f"<p class='dim'>overheads: profile {e(p.name)} ({e(p.status)}, {e(p.gpu)}"
                 f"{', ' + e(p.date) if p.date else ''}). All sizes in GiB (2**30 bytes).</p></body></html>\n")
    return "\n".join(parts)


def write_report(plan: Plan, request: PlanRequest, path: str | Path, *, force: bool = False) -> list[Path]:
    """Write ``path`` (.html: the page; .png: the figure) and return what was written."""
    path = check_report_path(path, force)
    png = plan_png(plan, request)
    data = png if path.suffix.lower() == ".png" else html_report(plan, png)
    return write_files({path: data}, force=force)
