"""``qplan --model 70b --gpu 24GB [knobs]``: the memory plan, verdict and recommended settings.

Knobs the user sets are kept fixed; the others are searched (see planner/search/recommend.py)."""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from pydantic import ValidationError

from planner.inputs.flags import add_knob_arguments, settings_from_args
from planner.errors import QPlanError
from planner.inputs.gpus import ECC_MODES
from planner.inputs.settings import Parallel, Strategy
from planner.pricing import margin
from planner.output.emit import EMITTERS as EMIT_FORMATS, emit_plan
from planner.pricing.price import PlanRequest, price
from planner.search.grid import DEFAULT_MAX_RANK, RANKS
from planner.search.recommend import PREFERENCES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Will this QLoRA fine-tune fit? Prints a memory plan, a verdict and settings that fit."
    parser.add_argument("--model", "-m", required=True, help="catalogue alias (70b, llama-3.1-8b...), config.json path, model dir or hub id")
    parser.add_argument("--gpu", "-g", default="24GB", help="24GB, 24GiB, 80GB, a card name (rtx4090, a100-80gb, h100...) or auto")
    parser.add_argument("--ecc", choices=ECC_MODES, help="the card's ECC mode, for cards whose memory depends on it "
                        "(RTX A6000, L40S, A10...); default: ECC on, the smaller figure")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of one host (more than 1: a per-GPU plan, see --strategy)")
    parser.add_argument("--strategy", choices=get_args(Strategy), default="fsdp",
                        help="with --gpus > 1: fsdp (FSDP-QLoRA, measured), zero3 (DeepSpeed ZeRO-3), ddp (a full copy "
                             "per GPU), device-map (layers split across GPUs, one process); the last three are estimates")
    parser.add_argument("--cpu-offload", action="store_true",
                        help="fsdp/zero3: parameters, gradients and optimizer state in host memory (Answer.AI's --use_cpu_offload)")
    add_knob_arguments(parser)
    parser.add_argument("--target-batch", type=int, default=16, help="sequences per optimizer step to reach with grad accumulation")
    parser.add_argument("--max-rank", type=int, default=DEFAULT_MAX_RANK, choices=RANKS,
                        help=f"highest LoRA rank the search tries (default {DEFAULT_MAX_RANK})")
    parser.add_argument("--margin", help=margin.HELP)
    parser.add_argument("--prefer", choices=PREFERENCES, default="seq", help="what to maximise first")
    parser.add_argument("--top", type=int, default=5, help="how many fitting settings to list")
    parser.add_argument("--profile", help="overhead profile name under profiles/overhead/")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (see qplan schema)")
    parser.add_argument("--trace", action="store_true",
                        help="price the plan and the top recommendations by tracing the real step on fake CUDA tensors "
                             "(needs torch, transformers, peft, bitsandbytes and a C++ compiler; seconds per plan)")
    parser.add_argument("--report", help="also write pictures of the plan: PATH.html (self-contained page) or PATH.png")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --report file")
    parser.add_argument("--emit", choices=EMIT_FORMATS, help="print the plan's settings as that tool's config instead")


def run(args: argparse.Namespace) -> int:
    settings, fixed = settings_from_args(args)
    if args.gpus < 1 or args.gpus > 1024:
        raise QPlanError(f"--gpus {args.gpus}: must be between 1 and 1024")
    try:
        parallel = Parallel(gpus=args.gpus, strategy=args.strategy, cpu_offload=args.cpu_offload)
    except ValidationError as err:
        first = err.errors()[0]  # --gpus is in range by now, so the rule broken is Parallel's offload rule
        raise QPlanError(f"--cpu-offload: {first.get('ctx', {}).get('error', first['msg'])}") from None
    if not 1 <= args.target_batch <= 100_000 or not 1 <= args.top <= 1000:
        raise QPlanError("--target-batch must be between 1 and 100000 sequences, --top between 1 and 1000")
    if args.report:
        from planner.output.report import check_report_path, write_report

        check_report_path(args.report, args.force)
    request = PlanRequest.named(args.model, args.gpu, ecc=args.ecc, settings=settings, fixed=fixed, parallel=parallel,
        target_batch=args.target_batch, max_rank=args.max_rank, margin=margin.parse_margin(args.margin), prefer=args.prefer,
        profile=args.profile, top=args.top, verify=_tracer() if args.trace else None,
    )
    plan = price(request).plan
    if args.report:  # written before stdout, whatever happens to it
        for path in write_report(plan, request, args.report, force=args.force):
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    if args.emit:
        sys.stdout.write(emit_plan(plan, args.emit))
    elif args.json:
        sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
    else:
        from planner.output.render import render

        render(plan)
    return 0  # a plan is an answer either way; `qplan check` is the gate that exits 1 when a run will not fit


def _tracer():
    """The ``--trace`` hook (``planner.trace.estimate.verifier``), imported only when asked for."""
    from planner.trace.estimate import verifier

    return verifier
