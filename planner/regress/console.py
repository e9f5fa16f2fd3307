"""Rich rendering of a :class:`~.compare.Comparison` for people. Sizes in GiB (2**30 bytes)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from planner.regress.compare import METRIC_LABELS, Comparison, describe

VERDICT_STYLE = {
    "REGRESSION": "bold red", "new-oom": "bold red", "error": "red", "improved": "green", "fixed": "green",
    "ok": "", "still-oom": "yellow", "missing": "yellow", "added": "cyan",
}
OOM_NOTE = "OOM (x): out of memory, x = the peak reached before it"


def render_differences(comp: Comparison, console: Console) -> None:
    if not comp.differences:
        return
    table = Table(show_header=True, box=None, pad_edge=False)
    for column in ("", "base", "new"):
        table.add_column(column, overflow="fold")
    for diff in comp.differences:
        style = "bold red" if diff.severity == "blocking" else "yellow"
        table.add_row(f"[{style}]{diff.what}[/]", diff.base, diff.new)
    blocking = comp.blocked
    if blocking and comp.allow_mismatch:
        title = "NOT LIKE FOR LIKE - compared anyway (--allow-mismatch)"
    elif blocking:
        title = "NOT COMPARABLE - not compared (pass --allow-mismatch to compare anyway)"
    else:
        title = "base and new differ"
    console.print(Panel(table, title=title, border_style="red" if blocking else "yellow", title_align="left"))


def render_versions(comp: Comparison, console: Console) -> None:
    table = Table(title="Provenance (* = differs)", title_justify="left")
    for column in ("", "base", "new"):
        table.add_column(column, overflow="fold")
    for row in comp.versions:
        changed = row.changed
        table.add_row(("* " if changed else "  ") + row.what, row.base, row.new, style="bold yellow" if changed else None)
    console.print(table)


def render_rows(comp: Comparison, console: Console) -> None:
    """Compact enough for 80 columns: numbers and verdicts are never cut, long names fold, notes follow
    the table."""
    table = Table(title=f"{METRIC_LABELS[comp.metric]}, GiB", title_justify="left", box=box.SIMPLE_HEAD)
    cells = [(row.scenario, *row.cells(), row.verdict) for row in comp.rows]
    headers = ("scenario", "base", "new", "delta", "delta %", "verdict")
    for i, column in enumerate(headers):
        widest = max([len(column)] + [len(c[i]) for c in cells])
        fixed = column != "scenario"
        table.add_column(column, justify="right" if 0 < i < 5 else "left", overflow="fold",
                         min_width=widest if fixed else None, no_wrap=fixed)
    for row, values in zip(comp.rows, cells):
        style = VERDICT_STYLE[row.verdict]
        table.add_row(*values[:5], f"[{style}]{row.verdict}[/]" if style else row.verdict)
    console.print(table)
    for row in comp.rows:
        if row.note:
            console.print(f"  {row.scenario}: {row.note}", highlight=False)
    if comp.any_oom:
        console.print(OOM_NOTE)


def render(comp: Comparison, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]qplan regress[/]: base {comp.base_path} ({describe(comp.base)})")
    console.print(f"                -> new {comp.new_path} ({describe(comp.new)})")
    console.print(f"[bold]changed between the runs[/]: {comp.changed}")
    render_differences(comp, console)
    render_versions(comp, console)
    if comp.exit_code == 2:
        return
    render_rows(comp, console)
    style = {0: "bold green", 1: "bold red"}[comp.exit_code]
    console.print(f"[{style}]{comp.summary}[/]")
