"""Regression reports to keep or share: ``report.html`` (self-contained, the PNG plot embedded as base64)
or ``report.md`` (with the PNG written next to it, ``report.png``, and linked; the pair is written as one unit). Sizes in GiB (2**30 bytes).
Neither overwrites an existing file unless ``force``."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import quote

from planner.errors import QPlanError
from planner.regress.compare import FAILING, METRIC_LABELS, Comparison, describe
from planner.regress.console import OOM_NOTE
from planner.regress.plot import plot_png
from planner.files import check_output, write_files

REPORT_SUFFIXES = (".html", ".md")
SCENARIO_COLUMNS = ("scenario", "model", "base GiB", "new GiB", "delta GiB", "delta %", "verdict", "note")


def _headline(comp: Comparison) -> tuple[str, str]:
    verdict, _, detail = comp.summary.partition(": ")
    return verdict, detail


def _difference_title(comp: Comparison) -> str:
    if comp.blocked:
        return "NOT LIKE FOR LIKE: compared anyway (--allow-mismatch)"
    return "Base and new differ"


def markdown_report(comp: Comparison, png_name: str) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
        lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]

    verdict, detail = _headline(comp)
    out = [
        f"# qplan regress: `{comp.base_path}` -> `{comp.new_path}`", "",
        f"base: {describe(comp.base)}; new: {describe(comp.new)}", "", f"**{verdict}**: {detail}", "",
        f"Changed between the runs: {comp.changed}", "",
    ]
    if comp.differences:
        out += [f"## {_difference_title(comp)}", ""]
        out += table(("", "base", "new"), [(d.what, d.base, d.new) for d in comp.differences]) + [""]
    rows = [
        (r.scenario, r.model, *r.cells(), f"**{r.verdict}**" if r.verdict in FAILING else r.verdict, r.note)
        for r in comp.rows
    ]
    out += [f"## {METRIC_LABELS[comp.metric]}, GiB", ""] + table(SCENARIO_COLUMNS, rows)
    out += ["", *([OOM_NOTE + ".", ""] if comp.any_oom else []), f"![base vs new per scenario]({quote(png_name)})", "", "## Provenance", ""]
    versions = [(f"**{v.what}** (differs)" if v.changed else v.what, v.base, v.new) for v in comp.versions]
    out += table(("", "base", "new"), versions) + [""]
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#212121}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#c62828;font-weight:bold}
.good{color:#2e7d32}.warn{border:2px solid #f9a825;padding:.5em 1em;background:#fffde7}
.block{border:2px solid #c62828;padding:.5em 1em;background:#ffebee}tr.changed td{font-weight:bold;background:#fff8e1}
img{max-width:100%}"""


def html_report(comp: Comparison, png: bytes) -> str:
    e = html.escape
    verdict, detail = _headline(comp)
    status = "bad" if comp.exit_code else "good"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>qplan regress: {e(comp.base_path)} -> {e(comp.new_path)}</title><style>{CSS}</style></head><body>",
        f"<h1>qplan regress: <code>{e(comp.base_path)}</code> &rarr; <code>{e(comp.new_path)}</code></h1>",
        f"<p>base: {e(describe(comp.base))}; new: {e(describe(comp.new))}</p>",
        f"<p><span class='{status}'>{e(verdict)}</span>: {e(detail)}</p>",
        f"<p><b>Changed between the runs</b>: {e(comp.changed)}</p>",
    ]
    if comp.differences:
        parts.append(f"<div class='{'block' if comp.blocked else 'warn'}'><h2>{e(_difference_title(comp))}</h2>")
        parts.append("<table><tr><th></th><th>base</th><th>new</th></tr>")
        parts += [f"<tr><td>{e(d.what)}</td><td>{e(d.base)}</td><td>{e(d.new)}</td></tr>" for d in comp.differences]
        parts.append("</table></div>")
    parts.append(f"<h2>{e(METRIC_LABELS[comp.metric])}, GiB</h2>")
    parts.append(f"<img alt='base vs new per scenario' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in SCENARIO_COLUMNS) + "</tr>")
    for row in comp.rows:
        klass = "bad" if row.verdict in FAILING else "good" if row.verdict in ("improved", "fixed") else ""
        numbers = "".join(f"<td class='num'>{e(c)}</td>" for c in row.cells())
        parts.append(f"<tr><td>{e(row.scenario)}</td><td>{e(row.model)}</td>{numbers}"
                     f"<td class='{klass}'>{e(row.verdict)}</td><td>{e(row.note)}</td></tr>")
    parts.append(f"</table><p>{e(OOM_NOTE) + '.' if comp.any_oom else ''}</p><h2>Provenance</h2><table><tr><th></th><th>base</th><th>new</th></tr>")
    for v in comp.versions:
        parts.append(f"<tr class='{'changed' if v.changed else ''}'><td>{e(v.what)}</td><td>{e(v.base)}</td><td>{e(v.new)}</td></tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)


def check_report_path(path: Path, force: bool, inputs: tuple = ()) -> None:
    """Fail before any work on a wrong suffix or a file (report, or the .md's PNG) that may not be written."""
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise QPlanError(f"--report {path}: name it .html or .md")
    check_output(path, force=force, inputs=inputs)
    if path.suffix.lower() == ".md":
        check_output(path.with_suffix(".png"), force=force, inputs=inputs)


def write_report(comp: Comparison, path: str | Path, *, force: bool = False) -> list[Path]:
    """Write ``path`` (.html or .md; for .md also the PNG beside it) and return what was written."""
    path = Path(path)
    check_report_path(path, force)
    png_path = path.with_suffix(".png")
    markdown = path.suffix.lower() == ".md"
    png = plot_png(comp)
    if not markdown:
        return write_files({path: html_report(comp, png)}, force=force)
    return write_files({png_path: png, path: markdown_report(comp, png_path.name)}, force=force)
