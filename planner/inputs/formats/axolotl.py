"""axolotl's YAML config (``axolotl train config.yml``) read into qplan's sections.

Field names and defaults: axolotl v0.18.0-9-g067b021c8 (github.com/axolotl-ai-cloud/axolotl, commit
067b021c8b87a9e5e380b9173c704cf7340e30f5, 2026-07-24):

================================  ==========================  ====================================================
axolotl key (default)             qplan field                 source
================================  ==========================  ====================================================
base_model (required)             model                       utils/schemas/model.py
adapter: qlora + load_in_4bit     load_in_4bit, nf4, double   loaders/model.py: bnb_config = {load_in_4bit, nf4,
                                  quant, compute = torch_dtype  bnb_4bit_use_double_quant True, compute torch_dtype}
adapter: lora + load_in_8bit      load_in_8bit                loaders/model.py
bnb_config_kwargs                 bnb_4bit_quant_type,        loaders/model.py: bnb_config.update(bnb_config_kwargs)
                                  bnb_4bit_use_double_quant
bf16 (auto) / fp16 (null)         bf16 / fp16, compute dtype  utils/config/__init__.py: torch_dtype bf16 if bf16
                                                              (auto: is_torch_bf16_gpu_available) else fp16 if fp16
                                                              else float32
lora_r (required)                 r                           utils/schemas/peft.py
lora_alpha (null)                 lora_alpha                  utils/schemas/peft.py
lora_dropout (0.0)                lora_dropout                utils/schemas/peft.py
lora_target_linear / _modules     target_modules              loaders/adapter.py: find_all_linear_names (no lm_head)
sequence_len (512)                max_seq_length              utils/schemas/config.py
sample_packing (null = off)       packing                     utils/schemas/config.py
micro_batch_size (1)              per_device_train_batch_size utils/schemas/training.py
gradient_accumulation_steps (1)   gradient_accumulation_steps utils/schemas/training.py
optimizer (adamw_torch_fused)     optim                       utils/schemas/training.py
gradient_checkpointing (false)    gradient_checkpointing      utils/schemas/config.py
attn_implementation (null=sdpa),  attn_implementation         utils/schemas/config.py (flash_attention,
flash_attention / sdp_attention /                             sdp_attention, eager_attention are its deprecated
eager_attention                                               spellings)
================================  ==========================  ====================================================

A 4/8-bit adapter goes through ``prepare_model_for_kbit_training(model,
use_gradient_checkpointing=cfg.gradient_checkpointing)`` (loaders/model.py ``_prepare_model_for_quantization``):
norms and embeddings in float32, and checkpointing only when the config turns it on.
"""

from __future__ import annotations

from typing import Any

from planner.errors import QPlanError
from planner.inputs.config_file import Spelling
from planner.inputs.formats.common import Reader, Translated, packing_note, quantization_section, targets_value

NAME = "axolotl"
VERSION = "axolotl v0.18.0 (067b021c8b87)"

READ = {
    "base_model", "adapter", "load_in_4bit", "load_in_8bit", "bnb_config_kwargs", "bf16", "fp16", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_linear", "lora_target_modules", "sequence_len", "sample_packing", "pad_to_sequence_len",
    "micro_batch_size", "gradient_accumulation_steps", "batch_size", "optimizer", "gradient_checkpointing",
    "attn_implementation", "flash_attention", "sdp_attention", "eager_attention",
}
IGNORED = frozenset({
    "base_model_config", "model_type", "tokenizer_type", "tokenizer_config", "tokenizer_use_fast", "trust_remote_code",
    "revision_of_model", "strict", "datasets", "test_datasets", "dataset_prepared_path", "dataset_processes",
    "shuffle_merged_datasets", "val_set_size", "output_dir", "lora_model_dir", "hub_model_id", "hub_strategy",
    "wandb_project", "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "wandb_run_id", "use_wandb",
    "mlflow_tracking_uri", "mlflow_experiment_name", "use_tensorboard", "num_epochs", "max_steps", "lr_scheduler",
    "lr_scheduler_kwargs", "cosine_min_lr_ratio", "learning_rate", "warmup_steps", "warmup_ratio", "weight_decay",
    "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "optim_args", "loraplus_lr_ratio",
    "loraplus_lr_embedding", "peft_use_rslora", "lora_fan_in_fan_out", "evals_per_epoch", "eval_steps",
    "saves_per_epoch", "save_steps", "save_strategy", "save_total_limit", "save_first_step", "save_safetensors",
    "logging_steps", "early_stopping_patience", "resume_from_checkpoint", "auto_resume_from_checkpoints", "tf32",
    "special_tokens", "tokens", "chat_template", "default_system_message", "train_on_inputs", "group_by_length",
    "eval_sample_packing", "eval_batch_size", "eval_table_size", "eval_max_new_tokens", "seed", "local_rank",
    "loss_watchdog_threshold", "loss_watchdog_patience", "gradient_checkpointing_kwargs", "sample_packing_group_size",
    "sample_packing_bin_size", "sample_packing_sequentially", "excess_length_strategy", "min_sample_len",
    "ddp_timeout", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "dataloader_num_workers", "dataloader_pin_memory",
    "dataloader_prefetch_factor", "debug", "neftune_noise_alpha", "is_llama_derived_model", "is_mistral_derived_model",
})
UNMODELLED = {
    "peft_use_dora": "DoRA adds a magnitude vector per module and a larger backward",
    "lora_modules_to_save": "trains full copies of those modules", "lora_target_parameters": "adapts parameters, not modules",
    "peft_layers_to_transform": "adapts only some layers", "lora_rank_pattern": "gives modules other ranks",
    "lora_on_cpu": "keeps LoRA weights on the CPU", "qlora_sharded_model_loading": "loads the model sharded",
    "deepspeed": "DeepSpeed partitions the run", "fsdp": "FSDP shards the run", "fsdp_config": "FSDP shards the run",
    "fsdp_version": "FSDP shards the run", "torch_compile": "torch.compile changes what is saved for backward",
    "activation_offloading": "moves activations to the CPU", "plugins": "plugins (Liger, Cut Cross Entropy...) replace kernels",
    "liger_rms_norm": "Liger kernels", "liger_glu_activation": "Liger kernels", "liger_fused_linear_cross_entropy": "Liger kernels",
    "liger_cross_entropy": "Liger kernels", "cut_cross_entropy": "a chunked loss", "chunked_cross_entropy": "a chunked loss",
    "flash_attn_cross_entropy": "flash-attention's loss kernel", "flash_attn_fuse_mlp": "a fused MLP",
    "flash_attn_rms_norm": "a fused norm", "tiled_mlp": "a tiled MLP", "lora_mlp_kernel": "axolotl's LoRA kernels",
    "lora_qkv_kernel": "axolotl's LoRA kernels", "lora_o_kernel": "axolotl's LoRA kernels",
    "unsloth_lora_mlp": "unsloth kernels", "unsloth_lora_qkv": "unsloth kernels", "unsloth_lora_o": "unsloth kernels",
    "unsloth_cross_entropy_loss": "unsloth kernels", "xformers_attention": "xformers attention",
    "flex_attention": "flex attention", "sage_attention": "sage attention", "s2_attention": "shifted sparse attention",
    "rl": "preference training (DPO, KTO, ORPO...) keeps pairs or a reference model", "gptq": "a GPTQ base model",
    "sequence_parallel_degree": "sequence parallelism", "context_parallel_size": "context parallelism",
    "tensor_parallel_size": "tensor parallelism", "fp8": "fp8 training", "bfloat16": "a 16-bit model without autocast",
    "float16": "a 16-bit model without autocast", "float32": "a float32 model", "relora": "ReLoRA restarts",
    "embeddings_skip_upcast": "keeps embeddings in 16-bit", "unfrozen_parameters": "trains base weights",
    "lora_embedding": "adapts embeddings",
}
ATTN = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash_attention_2"}
DEFAULT_OPTIM = "adamw_torch_fused"  # utils/schemas/training.py


def translate(data: Any) -> Translated:
    r = Reader(data, NAME, READ, IGNORED, UNMODELLED)
    notes: list[str] = []
    model = r.model("base_model")
    adapter = r.typed("adapter", str, note=False)
    four, eight = r.typed("load_in_4bit", bool, False, note=False), r.typed("load_in_8bit", bool, False, note=False)
    if adapter is None:
        raise QPlanError(f"{NAME} adapter is not set: axolotl fine-tunes every weight; qplan check prices LoRA and QLoRA "
                         "(adapter: qlora or lora)")
    if adapter == "qlora" and not four:
        raise QPlanError(f"{NAME} adapter: qlora needs load_in_4bit: true (axolotl builds its 4-bit config only then)")
    if adapter not in ("qlora", "lora") or (adapter == "lora" and four):
        raise QPlanError(f"{NAME} adapter: {adapter}{' with load_in_4bit' if four else ''} is not modelled; qplan reads "
                         "adapter: qlora with load_in_4bit, or adapter: lora (16-bit, or load_in_8bit)")
    bits = 4 if adapter == "qlora" else 8 if eight else None

    bf16, fp16 = r.get("bf16", "auto"), r.typed("fp16", bool, False, note=False)
    if bf16 not in ("auto", True, False):
        raise QPlanError(f"{NAME} bf16: expected true, false or auto, got {bf16}")
    if bf16 == "auto":
        notes.append(f"{NAME} bf16: auto is bf16 on a card that has it (is_torch_bf16_gpu_available); planned as bf16")
    bf16 = bool(bf16)
    dtype = "bfloat16" if bf16 else "float16" if fp16 or eight else "float32"
    if bits == 4 and dtype == "float32":
        raise QPlanError(f"{NAME} bf16 and fp16 are off: the 4-bit compute dtype is float32 (cfg.torch_dtype); qplan "
                         "models bfloat16 or float16 compute (set bf16: true)")
    kwargs = r.get("bnb_config_kwargs", {}, note=False)
    allowed = {"bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "llm_int8_threshold", "llm_int8_has_fp16_weight",
               "bnb_4bit_quant_storage"}
    if not isinstance(kwargs, dict) or set(kwargs) - allowed:
        raise QPlanError(f"{NAME} bnb_config_kwargs: qplan reads only {', '.join(sorted(allowed))}")
    quant = quantization_section(bits, kwargs.get("bnb_4bit_quant_type", "nf4"),
                                 kwargs.get("bnb_4bit_use_double_quant", True), dtype)

    rank = r.positive("lora_r")
    if rank is None:
        raise QPlanError(f"{NAME} lora_r is not set: qplan needs the LoRA rank")
    if r.typed("lora_target_linear", bool, False, note=False):
        targets: Any = "all-linear"
    elif r.has("lora_target_modules"):
        targets = targets_value(r.get("lora_target_modules"), NAME, "lora_target_modules")
    else:
        raise QPlanError(f"{NAME} neither lora_target_linear nor lora_target_modules is set: name the modules to adapt")
    lora = {"r": rank, "lora_alpha": r.typed("lora_alpha", (int, float), rank, note=False),
            "lora_dropout": r.typed("lora_dropout", (int, float), 0.0), "target_modules": targets}

    checkpointing = r.get("gradient_checkpointing", False)
    if checkpointing not in (True, False):
        raise QPlanError(f"{NAME} gradient_checkpointing: {checkpointing} offloads checkpoints to the CPU or disk; qplan "
                         "does not price it yet; use true or false to check the rest")
    seq_len = r.positive("sequence_len", 512)
    micro = r.positive("micro_batch_size", 1)
    accum = r.positive("gradient_accumulation_steps", None)
    if accum is None:  # axolotl derives it from batch_size when that is given (utils/config normalize_config)
        total = r.positive("batch_size", None)
        accum = max(1, total // micro) if total else 1
        if not total:
            r.defaulted.append("gradient_accumulation_steps=1")
    packed = bool(r.typed("sample_packing", bool, False))
    padded = r.typed("pad_to_sequence_len", bool, None, note=False)
    training = {"per_device_train_batch_size": micro, "gradient_accumulation_steps": accum,
                "optim": r.typed("optimizer", str, DEFAULT_OPTIM), "bf16": bf16, "fp16": fp16 and not bf16,
                "gradient_checkpointing": checkpointing, "max_seq_length": seq_len, "packing": packed}
    notes.append(packing_note(packed or bool(padded), "sequence_len", seq_len,
                              "sample_packing" if packed or not padded else "pad_to_sequence_len"))

    attn = r.typed("attn_implementation", str, None, note=False)
    for key, name in (("flash_attention", "flash_attention_2"), ("sdp_attention", "sdpa"), ("eager_attention", "eager")):
        if r.typed(key, bool, False, note=False):
            attn = attn or name
    if attn is not None and attn not in ATTN:
        raise QPlanError(f"{NAME} attn_implementation: {attn} is not modelled; qplan prices sdpa, eager, flash_attention_2")

    out = {"model": model, "lora": lora, "training": training, "attn_implementation": ATTN.get(attn, "sdpa"),
           "prepare_model_for_kbit_training": bits is not None}
    if quant:
        out["quantization"] = quant
    update = {}
    if bits is not None:
        notes.append(f"{NAME} calls prepare_model_for_kbit_training(use_gradient_checkpointing=gradient_checkpointing) "
                     "for a quantized adapter: norms and embeddings in float32")
        update["gradient_checkpointing"] = checkpointing
    keys = {"training.per_device_train_batch_size": "micro_batch_size", "training.gradient_accumulation_steps":
            "gradient_accumulation_steps", "training.optim": "optimizer", "training.max_seq_length": "sequence_len",
            "training.gradient_checkpointing": "gradient_checkpointing", "lora.r": "lora_r", "lora.lora_alpha": "lora_alpha",
            "lora.lora_dropout": "lora_dropout", "lora.target_modules": "lora_target_modules",
            "quantization.bnb_4bit_quant_type": "bnb_config_kwargs.bnb_4bit_quant_type",
            "quantization.bnb_4bit_use_double_quant": "bnb_config_kwargs.bnb_4bit_use_double_quant",
            "quantization.bnb_4bit_compute_dtype": "bf16"}
    return Translated(NAME, out, Spelling(format=NAME, keys=keys, update=update, notes=notes + r.defaults_note()))


def detect_score(data: dict) -> bool:
    """axolotl's own top-level keys."""
    return any(key in data for key in ("base_model", "adapter", "micro_batch_size", "sequence_len", "lora_target_linear"))

