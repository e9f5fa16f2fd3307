"""``python -m planner.trace CONFIG.json [knobs] [--steps N] [--full-trace] [--events-out FILE.json.gz]
[--compare HISTORY.pickle.gz] [--json]``: trace the recipe's training step for a ``config.json`` on the CPU and
print the allocated peak (or its comparison with a GPU history).

Exit codes: 0 traced, 2 bad input or the trace cannot run here (one line, no traceback)."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import warnings
from pathlib import Path

from planner.files import write_file
from planner.inputs.flags import add_knob_arguments, settings_from_args
from planner.errors import QPlanError
from planner.inputs.units import fmt_gib


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise QPlanError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m planner.trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a config.json, or a folder holding one")
    add_knob_arguments(parser)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps (default 2: the second is the steady state)")
    parser.add_argument("--full-trace", action="store_true", help="trace every layer and micro-batch (keeps the event stream)")
    parser.add_argument("--events-out", type=Path, help="write the event stream as gzipped JSON (implies --full-trace)")
    parser.add_argument("--force", action="store_true", help="replace an existing --events-out file")
    parser.add_argument("--compare", type=Path, metavar="HISTORY", help="compare with a GPU history (qplan measure "
                        "--history-dir: <scenario>.pickle.gz beside its .json); prints the comparison as JSON")
    parser.add_argument("--json", action="store_true", help="print the trace summary as JSON")
    return parser


def _config(path: Path) -> dict:
    path = path / "config.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise QPlanError(f"cannot read {path}: {error}") from None


def _quiet() -> None:
    """The libraries' deprecation warnings and load-time logs are about the recipe, not the trace."""
    warnings.filterwarnings("ignore")
    for name in ("bitsandbytes", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        settings, _ = settings_from_args(args)
        if args.steps < 1:
            raise QPlanError("--steps must be at least 1")
        config = _config(args.config)
        _quiet()
        from planner.trace import trace_step

        trace = trace_step(config, settings, steps=args.steps, full=args.full_trace or args.events_out is not None)
    except QPlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.events_out:
        try:
            write_file(args.events_out, gzip.compress(json.dumps(trace.events).encode()), force=args.force)
        except QPlanError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    summary = trace.model_dump(exclude={"events"})
    if args.compare:
        from planner.trace.compare import compare

        print(json.dumps(compare(trace.stream, args.compare), indent=1))
    elif args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"allocated peak {fmt_gib(trace.allocated_peak_bytes)} ({trace.allocated_peak_bytes:,} B; "
              f"unrounded {trace.allocated_peak_unrounded_bytes:,} B), {trace.requests:,} requests, "
              f"paged optimizer state {fmt_gib(trace.paged_bytes)}; {trace.traced}")
        for note in trace.notes:
            print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
