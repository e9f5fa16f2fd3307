"""``qplan validate RESULTS.jsonl...``: predicted vs measured for every scenario. The overhead terms are
fitted on one half of the scenarios and the errors reported on the other half, then the halves swap, so every
scenario is predicted by a fit that did not see it (two-fold cross-validation)."""

from __future__ import annotations

import argparse
import sys

from planner.fit.calibrate import cross_validate, load_measurements, validate
from planner.memory.overhead import select_profile
from planner.inputs.units import gib, parse_percent
from planner.pricing.margin import MAX_SHARE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Check the analytic model against GPU measurements (fit on half, report on the other half)."
    parser.add_argument("results", nargs="+", help="measurement JSON-lines files from qplan measure")
    parser.add_argument("--profile", help="validate this overhead profile on all scenarios instead of a split fit")
    parser.add_argument("--margin", default="0%", help="safety margin (share of the cap, e.g. 5%%) used when judging capped runs")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    margin = parse_percent(args.margin, what="--margin", below=MAX_SHARE)
    records = load_measurements(args.results)
    if args.profile:
        report = validate(records, select_profile(name=args.profile), margin)
    else:
        report = cross_validate(records, select_profile(name="literature-defaults"), margin)
    if args.json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Predicted vs measured (GiB), profile: {report.profile}", title_justify="left")
    table.add_column("scenario", no_wrap=True)
    for column in ("status", "device meas.", "device pred.", "err", "alloc meas.", "alloc pred.", "err"):
        table.add_column(column, justify="right")

    def pct(x):
        return "" if x is None else f"{100 * x:+.1f}%"

    def g(x):
        return "" if x is None else f"{gib(x):.2f}"

    for row in report.rows:
        name = row.scenario + (" (expandable)" if row.allocator != "default" else "")
        table.add_row(name, row.status, g(row.measured_device), g(row.predicted_device), pct(row.device_error),
                      g(row.measured_allocated), g(row.predicted_allocated), pct(row.allocated_error))
    console = Console()
    console.print(table)
    for allocator, stats in report.allocators.items():
        if stats.median_device_error is None:
            continue
        console.print(
            f"{allocator} allocator, {stats.scenarios} runs: peak device memory: median |error| "
            f"{100 * stats.median_device_error:.2f}%, max {100 * stats.max_device_error:.2f}%; peak allocated: median "
            f"{100 * stats.median_allocated_error:.2f}%, max {100 * stats.max_allocated_error:.2f}%"
        )
    console.print(f"false 'fits' (predicted to fit the cap, measured OOM): {len(report.false_fits)} {report.false_fits or ''}")
    return 0
