"""``qplan measure``: real QLoRA training memory on this machine's CUDA GPU.

    qplan measure --suite core --out profiles/measurements/NAME.jsonl [--only NAME ...] [--shard i/n]
    qplan measure --model llama-2-7b --seq-len 2048 --rank 64 ... --out run.jsonl
    [--memory-cap 24GB] [--append | --force] [--timeout 900] [--log run.log] [--stop-after SECONDS]
    [--history-dir DIR]

One Measurement per scenario, one JSON line each, written as soon as it finishes. Each scenario runs in a
fresh process (planner/measure/worker.py); an OOM is a result (status "oom" with its phase), not a failure.
Exit codes: 0 every scenario measured (ok or oom), 1 some ended in an error, 2 bad input or no CUDA GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.errors import QPlanError
from planner.measure.cuda import require_cuda
from planner.results import Measurement, Scenario, Suite
from planner.inputs.units import parse_size
from planner.inputs.flags import add_knob_arguments, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Measure real QLoRA training memory on this CUDA GPU, one fresh process per scenario."
    parser.add_argument("--suite", help="suite file, or a name under profiles/suites/ (e.g. core)")
    parser.add_argument("--model", "-m", help="one scenario: catalogue slug or folder/path of a config.json")
    parser.add_argument("--out", required=True, type=Path, help="JSON-lines file to write, one Measurement per line")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these scenarios of the suite")
    parser.add_argument("--shard", help="i/n: measure every n-th scenario starting at the i-th")
    parser.add_argument("--memory-cap", help="emulate a card of this size, e.g. 24GB (see planner/measure/cap.py)")
    parser.add_argument("--append", action="store_true", help="add to an existing --out")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per scenario before it is recorded as an error")
    parser.add_argument("--log", type=Path, help="append every worker's stderr here")
    parser.add_argument("--stop-after", type=float, metavar="SECONDS",
                        help="start no new scenario after this long (the rest are left out, not recorded)")
    parser.add_argument("--history-dir", type=Path, metavar="DIR",
                        help="also record each scenario's caching-allocator history: DIR/<scenario>.pickle.gz and "
                             "DIR/<scenario>.json (planner/measure/history.py; one GPU only)")
    single = parser.add_argument_group("single scenario (with --model)")
    single.add_argument("--name", help="scenario name (default: made from the settings)")
    single.add_argument("--steps", type=int, default=3, help="optimizer steps; peaks are over all of them")
    single.add_argument("--trainer", action="store_true", help="run through transformers.Trainer")
    add_knob_arguments(single)


def scenarios_from_args(args: argparse.Namespace) -> list[Scenario]:
    from planner.measure.suite import load_suite, select

    if bool(args.suite) == bool(args.model):
        raise QPlanError("give either --suite or --model")
    if args.suite:
        scenarios = select(load_suite(args.suite).scenarios, args.only, args.shard)
    else:
        from planner.measure.configs import config_dir

        config_dir(args.model)
        settings, _ = settings_from_args(args)
        if args.steps < 1:
            raise QPlanError("--steps must be at least 1")
        name = args.name or (f"{Path(args.model).name}-s{settings.seq_len}-b{settings.batch}-r{settings.rank}"
                             f"-{'gc' if settings.gradient_checkpointing else 'nogc'}-{settings.optim}")
        scenarios = [Scenario(name=name, model=args.model, settings=settings, steps=args.steps, trainer=args.trainer)]
    if args.memory_cap:
        cap = parse_size(args.memory_cap, what="--memory-cap")
        scenarios = [s.model_copy(update={"memory_cap_bytes": cap}) for s in scenarios]
    if not scenarios:
        raise QPlanError("no scenario selected")
    return scenarios


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from planner.measure.suite import run_suite, summary

    scenarios = scenarios_from_args(args)
    if args.append and args.force:
        raise QPlanError("give --append or --force, not both")
    if args.out.exists() and not (args.append or args.force):
        raise QPlanError(f"{args.out} exists: pass --append to add to it or --force to overwrite it")
    if args.timeout <= 0:
        raise QPlanError("--timeout must be positive")
    if args.history_dir and any(s.gpus > 1 for s in scenarios):
        raise QPlanError("--history-dir records one GPU's allocator: leave out the scenarios with gpus > 1")
    require_cuda(max(s.gpus for s in scenarios))
    if args.force:
        args.out.unlink(missing_ok=True)

    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("measuring", total=len(scenarios))

        def on_result(m: Measurement) -> None:
            progress.console.print(summary(m))
            progress.advance(task)
            if len(scenarios) > progress.tasks[0].completed:
                progress.update(task, description=scenarios[int(progress.tasks[0].completed)].name)

        progress.update(task, description=scenarios[0].name)
        results = run_suite(Suite(name="cli", scenarios=scenarios), args.out, on_result=on_result,
                            timeout=args.timeout, log=args.log, stop_after=args.stop_after,
                            history_dir=args.history_dir)
    counts = {status: sum(m.status == status for m in results) for status in ("ok", "oom", "error")}
    console.print(f"{len(results)} scenarios: {counts['ok']} ok, {counts['oom']} oom, {counts['error']} error -> {args.out}")
    if len(results) < len(scenarios):
        left = [s.name for s in scenarios[len(results):]]
        console.print(f"not started (--stop-after): {' '.join(left)}")
    return 1 if counts["error"] else 0
