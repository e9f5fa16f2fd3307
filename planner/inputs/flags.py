"""The training knobs as command-line flags, named as in BitsAndBytesConfig / LoraConfig / TrainingArguments
(``qplan``, ``qplan measure``, ``python -m planner.trace``), and their reading into :class:`TrainSettings`."""

from __future__ import annotations

import argparse

from planner.errors import QPlanError
from planner.inputs.settings import TRAINING_ARGS_OPTIM, TrainSettings

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
    parser.add_argument("--optim", choices=list(TRAINING_ARGS_OPTIM),
                        help="TrainingArguments.optim (adamw_torch_fused is priced as adamw_torch, adamw_bnb_8bit as adamw_8bit)")
    parser.add_argument("--gradient-checkpointing", action=bool_opt, default=None)
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--full", action="store_true", default=None, help="full fine-tuning in 16-bit (comparison)")
    parser.add_argument("--prepare-kbit", action=bool_opt, default=None, help="prepare_model_for_kbit_training (default on)")
    parser.add_argument("--autocast", action=bool_opt, default=None, help="Trainer bf16/fp16 autocast (default on)")
    parser.add_argument("--expandable-segments", action="store_true", default=None,
                        help="the run sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (less allocator slack)")


def settings_from_args(args: argparse.Namespace) -> tuple[TrainSettings, set[str]]:
    given = {field: getattr(args, flag) for flag, field in KNOBS.items() if getattr(args, flag, None) is not None}
    if "optim" in given:
        given["optim"] = TRAINING_ARGS_OPTIM[given["optim"]]
    try:
        settings = TrainSettings(**given)
    except ValueError as err:  # pydantic.ValidationError is a ValueError
        first = err.errors()[0] if hasattr(err, "errors") else {"loc": ("?",), "msg": str(err)}
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "input"
        raise QPlanError(f"{flag}: {first['msg']}") from None
    return settings, set(given)
