"""``qplan --model 70b --gpu 24GB [knobs]``: the memory plan, verdict and recommended settings.

Knobs the user sets are kept fixed; the others are searched (see planner/recommend.py)."""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from pydantic import ValidationError

from planner.errors import QPlanError
from planner.pricing.price import Request, make_plan
from planner.search.recommend import PREFERENCES
from planner.inputs.settings import Parallel, Strategy, TrainSettings

# CLI flag -> TrainSettings field
KNOBS = {
    "quant": "quant", "double_quant": "double_quant", "compute_dtype": "compute_dtype", "rank": "rank",
    "alpha": "alpha", "targets": "targets", "lora_dropout": "lora_dropout", "seq_len": "seq_len",
    "batch": "batch", "grad_accum": "grad_accum", "optim": "optim",
    "gradient_checkpointing": "gradient_checkpointing", "attn": "attn", "full": "full_finetune",
    "prepare_kbit": "prepare_kbit", "autocast": "autocast", "expandable_segments": "expandable_segments",
}


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """The training knobs, named as in BitsAndBytesConfig / LoraConfig / TrainingArguments."""
    fields = TrainSettings.model_fields
    bool_opt = argparse.BooleanOptionalAction
    parser.add_argument("--quant", choices=["nf4", "fp4", "int8", "none"], help=fields["quant"].description)
    parser.add_argument("--double-quant", action=bool_opt, default=None, help="bnb_4bit_use_double_quant (default on)")
    parser.add_argument("--compute-dtype", choices=["bf16", "fp16"])
    parser.add_argument("--rank", "-r", type=int, help="LoraConfig.r (searched when not given)")
    parser.add_argument("--alpha", type=float, help="LoraConfig.lora_alpha (no effect on memory)")
    parser.add_argument("--targets", help="all-linear | attn | comma-separated module names (default all-linear)")
    parser.add_argument("--lora-dropout", type=float, help="LoraConfig.lora_dropout (default 0.05)")
    parser.add_argument("--seq-len", type=int, help="max_seq_length (searched when not given)")
    parser.add_argument("--batch", type=int, help="per_device_train_batch_size (searched when not given)")
    parser.add_argument("--grad-accum", type=int, help="gradient_accumulation_steps (default: reach --target-batch)")
    parser.add_argument("--optim", choices=list(TrainSettings.model_fields["optim"].annotation.__args__))
    parser.add_argument("--gradient-checkpointing", action=bool_opt, default=None)
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--full", action="store_true", default=None, help="full fine-tuning in 16-bit (comparison)")
    parser.add_argument("--prepare-kbit", action=bool_opt, default=None, help="prepare_model_for_kbit_training (default on)")
    parser.add_argument("--autocast", action=bool_opt, default=None, help="Trainer bf16/fp16 autocast (default on)")
    parser.add_argument("--expandable-segments", action="store_true", default=None,
                        help="the run sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (less allocator slack)")


def settings_from_args(args: argparse.Namespace) -> tuple[TrainSettings, set[str]]:
    given = {field: getattr(args, flag) for flag, field in KNOBS.items() if getattr(args, flag, None) is not None}
    try:
        settings = TrainSettings(**given)
    except ValueError as err:  # pydantic.ValidationError is a ValueError
        first = err.errors()[0] if hasattr(err, "errors") else {"loc": ("?",), "msg": str(err)}
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "input"
        raise QPlanError(f"{flag}: {first['msg']}") from None
    return settings, set(given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Will this QLoRA fine-tune fit? Prints a memory plan, a verdict and settings that fit."
    parser.add_argument("--model", "-m", required=True, help="catalogue alias (70b, llama-3.1-8b...), config.json path, model dir or hub id")
    parser.add_argument("--gpu", "-g", default="24GB", help="24GB, 24GiB, 80GB, a card name (rtx4090, a100-80gb, h100...) or auto")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of one host (more than 1: a per-GPU plan, see --strategy)")
    parser.add_argument("--strategy", choices=get_args(Strategy), default="fsdp",
                        help="with --gpus > 1: fsdp (FSDP-QLoRA, measured), zero3 (DeepSpeed ZeRO-3), ddp (a full copy "
                             "per GPU), device-map (layers split across GPUs, one process); the last three are estimates")
    parser.add_argument("--cpu-offload", action="store_true",
                        help="fsdp/zero3: parameters, gradients and optimizer state in host memory (Answer.AI's --use_cpu_offload)")
    add_knob_arguments(parser)
    parser.add_argument("--target-batch", type=int, default=16, help="sequences per optimizer step to reach with grad accumulation")
    parser.add_argument("--margin", help=MARGIN_HELP)
    parser.add_argument("--prefer", choices=PREFERENCES, default="seq", help="what to maximise first")
    parser.add_argument("--top", type=int, default=5, help="how many fitting settings to list")
    parser.add_argument("--profile", help="overhead profile name under profiles/overhead/")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (see qplan schema)")


MARGIN_HELP = ("safety margin as a share of usable memory kept free, e.g. 5%%; default: the overhead profile's "
               "share of each plan's estimated (not exactly counted) part, from its held-out validation")


def parse_margin(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise QPlanError(f"--margin {text!r}: write it like 5% or 0.05") from None
    if not 0 <= value < 0.9:
        raise QPlanError(f"--margin {text!r} must be between 0% and 90%")
    return value


def run(args: argparse.Namespace) -> int:
    settings, fixed = settings_from_args(args)
    if args.gpus < 1 or args.gpus > 1024:
        raise QPlanError(f"--gpus {args.gpus}: must be between 1 and 1024")
    try:
        parallel = Parallel(gpus=args.gpus, strategy=args.strategy, cpu_offload=args.cpu_offload)
    except ValidationError as err:
        first = err.errors()[0]  # --gpus is in range by now, so the rule broken is Parallel's offload rule
        raise QPlanError(f"--cpu-offload: {first.get('ctx', {}).get('error', first['msg'])}") from None
    if args.target_batch < 1 or args.top < 1:
        raise QPlanError("--target-batch and --top must be at least 1")
    plan = make_plan(Request(
        model=args.model, gpu=args.gpu, settings=settings, fixed=fixed, parallel=parallel,
        target_batch=args.target_batch, margin=parse_margin(args.margin), prefer=args.prefer,
        profile=args.profile, top=args.top,
    ))
    if args.json:
        sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
    else:
        from planner.output.render import render

        render(plan)
    return 0  # a plan is an answer either way; `qplan check` is the gate that exits 1 when a run will not fit
