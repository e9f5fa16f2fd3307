"""LLaMA-Factory's YAML config (``llamafactory-cli train config.yaml``) read into qplan's sections.

Field names and defaults: LLaMA-Factory v0.9.5-54-gff6d4d12e (github.com/hiyouga/LLaMA-Factory, commit
ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30, 2026-08-18), ``src/llamafactory/hparams/``:

====================================  ===========================  ==============================================
LLaMA-Factory key (default)           qplan field                  source
====================================  ===========================  ==============================================
model_name_or_path (required)         model                        model_args.py
stage (sft)                           sft or pt only               finetuning_args.py
finetuning_type (lora)                lora only                    finetuning_args.py
quantization_bit (null)               load_in_4bit / load_in_8bit  model_args.py; model/model_utils/quantization.py
quantization_method (bnb)             bitsandbytes only            model_args.py (older releases: "bitsandbytes")
quantization_type (nf4)               bnb_4bit_quant_type          model_args.py
double_quantization (true)            bnb_4bit_use_double_quant    model_args.py
bf16 / fp16 / pure_bf16               compute dtype, autocast      parser.py: compute_dtype bf16 if bf16 or
                                                                   pure_bf16, fp16 if fp16, else from the checkpoint
lora_rank (8)                         r                            finetuning_args.py
lora_alpha (null = 2 * rank)          lora_alpha                   finetuning_args.py
lora_dropout (0.0)                    lora_dropout                 finetuning_args.py
lora_target (all)                     target_modules (all-linear)  finetuning_args.py; model/model_utils/misc.py
cutoff_len (2048)                     max_seq_length               data_args.py
packing (null = stage == pt),         packing                      data_args.py, parser.py
neat_packing (false)
per_device_train_batch_size (8)       per_device_train_batch_size  transformers TrainingArguments
gradient_accumulation_steps (1)       gradient_accumulation_steps  transformers TrainingArguments
optim (adamw_torch_fused)             optim                        transformers TrainingArguments
disable_gradient_checkpointing        gradient_checkpointing       model_args.py; model/model_utils/checkpointing.py
(false: checkpointing on)             (negated)                    prepare_model_for_training
flash_attn (auto)                     attn_implementation          model_args.py; extras/constants.py
                                                                   AttentionFunction (auto, disabled, sdpa, fa2)
====================================  ===========================  ==============================================

LLaMA-Factory never calls ``prepare_model_for_kbit_training``: norms and embeddings stay in the compute dtype
(``upcast_layernorm`` is off by default); LoRA weights are float32 (``cast_trainable_params_to_fp32``,
model/adapter.py) unless ``pure_bf16``.
"""

from __future__ import annotations

from typing import Any

from planner.errors import QPlanError
from planner.inputs.config_file import Spelling, Training
from planner.inputs.formats.common import Reader, Translated, packing_note, quantization_section, targets_value

NAME = "LLaMA-Factory"
VERSION = "LLaMA-Factory v0.9.5 (ff6d4d12eeb0)"

READ = {
    "model_name_or_path", "stage", "finetuning_type", "quantization_bit", "quantization_method", "quantization_type",
    "double_quantization", "bf16", "fp16", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "cutoff_len",
    "packing", "neat_packing", "per_device_train_batch_size", "gradient_accumulation_steps", "optim",
    "disable_gradient_checkpointing", "flash_attn",
}
IGNORED = frozenset(Training.IGNORED) | frozenset({
    "trust_remote_code", "adapter_name_or_path", "cache_dir", "use_fast_tokenizer", "model_revision", "hf_hub_token",
    "template", "dataset", "dataset_dir", "eval_dataset", "max_samples", "overwrite_cache", "preprocessing_num_workers",
    "val_size", "train_on_prompt", "mask_history", "tokenized_path", "streaming", "buffer_size", "mix_strategy",
    "interleave_probs", "default_system", "enable_thinking", "plot_loss", "ddp_timeout", "use_rslora",
    "loraplus_lr_ratio", "loraplus_lr_embedding", "create_new_adapter", "pissa_init", "pissa_iter", "pissa_convert",
    "quantization_device_map", "offload_folder", "use_kv_cache", "rope_scaling", "compute_accuracy",
    "include_effective_tokens_per_second", "use_swanlab", "swanlab_project", "ray_run_name", "gradient_checkpointing",
    "use_reentrant_gc", "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules", "infer_backend",
    "export_dir", "print_param_status", "moe_aux_loss_coef", "save_only_model", "dataloader_num_workers",
})
UNMODELLED = {
    "use_dora": "DoRA adds a magnitude vector per module and a larger backward",
    "additional_target": "trains full copies of those modules", "upcast_layernorm": "keeps norms in float32",
    "upcast_lmhead_output": "upcasts the logits", "use_unsloth": "unsloth kernels", "use_unsloth_gc": "unsloth checkpointing",
    "enable_liger_kernel": "Liger kernels", "shift_attn": "shifted sparse attention", "mixture_of_depths": "mixture of depths",
    "use_galore": "GaLore projects the optimizer state", "use_apollo": "APOLLO projects the optimizer state",
    "use_badam": "BAdam trains blocks in turn", "pure_bf16": "keeps LoRA weights in bf16", "use_llama_pro": "adds layers",
    "use_adam_mini": "Adam-mini", "use_muon": "Muon", "deepspeed": "DeepSpeed partitions the run",
    "fsdp": "FSDP shards the run", "torch_compile": "torch.compile changes what is saved for backward",
    "resize_vocab": "resizes the embeddings", "use_kt": "KTransformers offload", "use_v1_kernels": "LLaMA-Factory's kernels",
    "fp8": "fp8 training", "use_mca": "Megatron core", "ref_model": "a reference model", "reward_model": "a reward model",
    "infer_dtype": "a dtype other than the compute dtype",
}
ATTN = {"auto": "sdpa", "sdpa": "sdpa", "disabled": "eager", "fa2": "flash_attention_2"}


def translate(data: Any) -> Translated:
    r = Reader(data, NAME, READ, IGNORED, UNMODELLED)
    notes: list[str] = []
    model = r.model("model_name_or_path")
    stage, kind = r.typed("stage", str, "sft", note=False), r.typed("finetuning_type", str, "lora", note=False)
    if stage not in ("sft", "pt"):
        raise QPlanError(f"{NAME} stage: {stage} keeps pairs, a reference or a reward model; qplan prices sft and pt")
    if kind != "lora":
        raise QPlanError(f"{NAME} finetuning_type: {kind} is not modelled; qplan check prices LoRA and QLoRA (lora)")

    bits = r.typed("quantization_bit", int, None, note=False)
    method = r.typed("quantization_method", str, "bnb", note=False)
    if bits is not None and (bits not in (4, 8) or method not in ("bnb", "bitsandbytes")):
        raise QPlanError(f"{NAME} quantization_bit: {bits} with quantization_method: {method} is not modelled; qplan "
                         "prices bitsandbytes 4 and 8 bits")
    bf16, fp16 = r.typed("bf16", bool, False, note=False), r.typed("fp16", bool, False, note=False)
    if not (bf16 or fp16):
        notes.append(f"{NAME}: neither bf16 nor fp16 is set, so the compute dtype comes from the checkpoint "
                     "(infer_optim_dtype) and there is no autocast; planned as bfloat16")
    quant = quantization_section(bits, r.typed("quantization_type", str, "nf4"),
                                 r.typed("double_quantization", bool, True), "float16" if fp16 and not bf16 else "bfloat16")

    rank = r.positive("lora_rank", 8)
    target = r.get("lora_target", "all", note=False)
    targets = "all-linear" if target == "all" else targets_value(target, NAME, "lora_target")
    lora = {"r": rank, "lora_alpha": r.typed("lora_alpha", (int, float), rank * 2, note=False),
            "lora_dropout": r.typed("lora_dropout", (int, float), 0.0), "target_modules": targets}

    seq_len = r.positive("cutoff_len", 2048)
    neat = bool(r.typed("neat_packing", bool, False, note=False))
    packed = r.typed("packing", bool, None, note=False)
    packed = (stage == "pt" if packed is None else packed) or neat
    disabled = bool(r.typed("disable_gradient_checkpointing", bool, False, note=False))
    training = {"per_device_train_batch_size": r.positive("per_device_train_batch_size", 8),
                "gradient_accumulation_steps": r.positive("gradient_accumulation_steps", 1),
                "optim": r.typed("optim", str, "adamw_torch_fused"), "bf16": bf16, "fp16": fp16 and not bf16,
                "gradient_checkpointing": not disabled, "max_seq_length": seq_len, "packing": packed}
    notes.append(packing_note(packed, "cutoff_len", seq_len, "neat_packing" if neat else "packing"))
    attn = r.get("flash_attn", "auto", note=False)
    if attn not in ATTN:
        raise QPlanError(f"{NAME} flash_attn: {attn} is not modelled; qplan prices auto (sdpa), sdpa, disabled (eager), fa2")
    notes.append(f"{NAME} does not call prepare_model_for_kbit_training: norms and embeddings stay 16-bit, LoRA weights "
                 "float32 (cast_trainable_params_to_fp32)" + (", gradient checkpointing on (its default)" if not disabled else ""))
    out = {"model": model, "lora": lora, "training": training, "attn_implementation": ATTN[attn],
           "prepare_model_for_kbit_training": False}
    if quant:
        out["quantization"] = quant
    keys = {"training.per_device_train_batch_size": "per_device_train_batch_size",
            "training.gradient_accumulation_steps": "gradient_accumulation_steps", "training.optim": "optim",
            "training.max_seq_length": "cutoff_len", "training.gradient_checkpointing": "disable_gradient_checkpointing",
            "lora.r": "lora_rank", "lora.lora_alpha": "lora_alpha", "lora.lora_dropout": "lora_dropout",
            "lora.target_modules": "lora_target", "quantization.bnb_4bit_quant_type": "quantization_type",
            "quantization.bnb_4bit_use_double_quant": "double_quantization", "quantization.bnb_4bit_compute_dtype": "bf16"}
    values = {"gradient_checkpointing": lambda on: not on}
    return Translated("llamafactory", out, Spelling(format="llamafactory", keys=keys, values=values,
                                          notes=notes + r.defaults_note()))


def detect_score(data: dict) -> bool:
    """LLaMA-Factory's own top-level keys."""
    return any(key in data for key in ("finetuning_type", "stage", "lora_rank", "lora_target", "cutoff_len",
                                       "quantization_bit", "flash_attn", "template"))
