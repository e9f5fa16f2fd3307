"""``qplan regress run|compare|predict``: memory regression reports between two result sets.

    qplan regress run --suite SUITE --out results/NAME.json [--script train.py]   # measure on this GPU
    qplan regress predict --suite SUITE --out results/NAME.json [--gpu h100]      # qplan's predictions
    qplan regress compare BASE.json NEW.json [--tolerance 2%] [--metric peak_device]
                          [--report report.html] [--report report.md] [--allow-mismatch] [--json]

compare exits 0 (no regression), 1 (regression, new OOM or a failed run), 2 (bad input or not comparable).
Nothing is overwritten without --force. File format: planner/results.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from planner.cli import OneLineParser
from planner.errors import QPlanError
from planner.files import check_output
from planner.regress.compare import METRICS, compare
from planner.results import load_results, write_results
from planner.results import Suite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Memory regression runs: measure a suite, snapshot qplan's predictions, compare two result sets."
    actions = parser.add_subparsers(dest="action", required=True, metavar="{run,compare,predict}", parser_class=OneLineParser)

    run = actions.add_parser("run", help="measure a suite on this GPU into one results file")
    run.add_argument("--suite", required=True, help="suite name or suite file (see qplan measure)")
    run.add_argument("--out", required=True, type=Path, help="results file to write, e.g. results/NAME.json")
    run.add_argument("--script", type=Path, help="training script under test: its path and git commit are recorded")
    run.add_argument("--timeout", type=float, help="seconds per scenario before it is recorded as an error (default 900)")
    run.add_argument("--log", type=Path, help="append every worker's stderr here")
    run.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    run.set_defaults(_action=_run)

    cmp = actions.add_parser("compare", help="compare two results files scenario by scenario")
    cmp.add_argument("base", help="baseline results file")
    cmp.add_argument("new", help="results file to check against the baseline")
    cmp.add_argument("--tolerance", default="2%", help="allowed growth: 2%% of the base peak (default) or a size like 0.5GiB")
    cmp.add_argument("--metric", choices=METRICS, default="peak_device", help="which peak to compare (default peak_device)")
    cmp.add_argument("--report", action="append", default=[], type=Path,
                     help="write a report: .html (plot embedded) or .md (plot as .png beside it); repeatable")
    cmp.add_argument("--allow-mismatch", action="store_true", help="compare runs from different GPUs or scenario definitions anyway")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp.add_argument("--force", action="store_true", help="overwrite existing report files")
    cmp.set_defaults(_action=_compare)

    pred = actions.add_parser("predict", help="snapshot qplan's predictions for a suite as a results file")
    pred.add_argument("--suite", required=True, help="suite name or suite file (see qplan measure)")
    pred.add_argument("--out", required=True, type=Path, help="results file to write")
    pred.add_argument("--gpu", help="card to predict for (picks its calibrated overhead profile), as in qplan --gpu")
    pred.add_argument("--profile", help="overhead profile name under profiles/overhead/")
    pred.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    pred.set_defaults(_action=_predict)


def run(args: argparse.Namespace) -> int:
    return args._action(args)


def _suite(spec: str) -> Suite:
    """Suites are ``qplan measure``'s: ``planner.measure.suite.load_suite(spec) -> Suite``."""
    try:
        from planner.measure.suite import load_suite
    except ImportError as err:
        raise QPlanError(f"cannot load suite {spec!r}: the measuring package is not available ({err})") from None
    return load_suite(spec)


def _run(args: argparse.Namespace) -> int:
    from planner.regress.run import measure_suite, stream_path

    check_output(args.out, force=args.force)
    if args.timeout is not None and args.timeout <= 0:
        raise QPlanError("--timeout must be positive")
    results = measure_suite(_suite(args.suite), args.out, script=args.script, force=args.force,
                            timeout=args.timeout, log=args.log)
    write_results(args.out, results, force=args.force)
    stream_path(args.out).unlink(missing_ok=True)
    print(f"wrote {len(results.measurements)} measurements to {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from planner.regress.predict import predict_suite

    check_output(args.out, force=args.force)
    results = predict_suite(_suite(args.suite), gpu=args.gpu, profile=args.profile)
    write_results(args.out, results, force=args.force)
    info = results.provenance
    commit = f", commit {info.qplan_git.label()}" if info.qplan_git else ""
    print(f"wrote {len(results.measurements)} predictions to {args.out} (qplan {info.qplan_version}{commit}, "
          f"overhead profile {info.overhead_profile})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from planner.regress.report import check_report_path

    for report in args.report:
        check_report_path(report, args.force, inputs=(args.base, args.new))
    comp = compare(
        load_results(args.base), load_results(args.new), metric=args.metric, tolerance=args.tolerance,
        allow_mismatch=args.allow_mismatch, base_path=args.base, new_path=args.new,
    )
    written = []  # reports first: they are written whatever happens to stdout afterwards
    if args.report and comp.exit_code != 2:
        from planner.regress.report import write_report

        for report in args.report:
            written += write_report(comp, report, force=args.force)
    if args.json:
        sys.stdout.write(comp.model_dump_json(indent=2) + "\n")
    else:
        from planner.regress.console import render

        render(comp)
    if comp.exit_code == 2:
        blocking = "; ".join(f"{d.what}: {d.base} vs {d.new}".strip() for d in comp.differences if d.severity == "blocking")
        raise QPlanError(f"base and new are not comparable ({blocking}); pass --allow-mismatch to compare anyway")
    for path in written:
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return comp.exit_code
