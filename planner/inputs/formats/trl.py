"""trl's ``trl sft --config config.yaml`` file (TrlParser: ScriptArguments, SFTConfig and ModelConfig fields
in one flat mapping) read into qplan's sections.

Field names and defaults: trl v1.9.0-26-gf2cd57710 (github.com/huggingface/trl, commit
f2cd57710ae345ea6428ae95363267fcf38a3dc8, 2026-07-24):

==================================  ===========================  ============================================
trl key (default)                   qplan field                  source
==================================  ===========================  ============================================
model_name_or_path (required)       model                        trainer/model_config.py ModelConfig
use_peft (false)                    must be true                 model_config.py; trainer/utils.py get_peft_config
load_in_4bit / load_in_8bit (false) load_in_4bit / load_in_8bit  model_config.py; utils.py get_quantization_config
bnb_4bit_quant_type (nf4)           bnb_4bit_quant_type          model_config.py
use_bnb_nested_quant (false)        bnb_4bit_use_double_quant    model_config.py
dtype (float32; torch_dtype before) bnb_4bit_compute_dtype and   model_config.py; get_quantization_config passes
                                    the model's dtype            bnb_4bit_compute_dtype=model_args.dtype
lora_r (16)                         r                            model_config.py
lora_alpha (32)                     lora_alpha                   model_config.py
lora_dropout (0.05)                 lora_dropout                 model_config.py
lora_target_modules (null)          target_modules               model_config.py (null: peft's default)
lora_task_type (CAUSAL_LM)          task_type                    model_config.py
attn_implementation (null = sdpa)   attn_implementation          model_config.py
max_length (1024)                   max_length                   trainer/sft_config.py SFTConfig
packing (false), padding_free       packing, padding_free        sft_config.py
per_device_train_batch_size (8)     per_device_train_batch_size  transformers TrainingArguments
gradient_accumulation_steps (1)     gradient_accumulation_steps  transformers TrainingArguments
optim (adamw_torch_fused)           optim                        transformers TrainingArguments
gradient_checkpointing (true)       gradient_checkpointing       trainer/base_config.py _BaseConfig
bf16 (null = not fp16)              bf16                         base_config.py ``__post_init__``
==================================  ===========================  ============================================

trl's SFTTrainer (trainer/sft_trainer.py) calls ``get_peft_model`` directly, never
``prepare_model_for_kbit_training``: norms and embeddings stay in ``dtype``.
"""

from __future__ import annotations

from typing import Any

from planner.errors import QPlanError
from planner.inputs.config_file import Spelling, Training
from planner.inputs.formats.common import Reader, Translated, packing_note, quantization_section, targets_value

NAME = "trl"
VERSION = "trl v1.9.0 (f2cd57710ae3)"

READ = {
    "model_name_or_path", "use_peft", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "use_bnb_nested_quant",
    "dtype", "torch_dtype", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_task_type",
    "attn_implementation", "max_length", "max_seq_length", "packing", "padding_free", "per_device_train_batch_size",
    "gradient_accumulation_steps", "optim", "gradient_checkpointing", "bf16", "fp16", "loss_type",
}
IGNORED = frozenset(Training.IGNORED) | frozenset({
    # ScriptArguments, DatasetMixtureConfig, the YAML's env block
    "dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split", "dataset_streaming",
    "gradient_checkpointing_use_reentrant", "ignore_bias_buffers", "datasets", "streaming", "test_split_size", "env",
    # ModelConfig / SFTConfig fields with no effect on memory
    "model_revision", "trust_remote_code", "use_rslora", "bnb_4bit_quant_storage", "truncation_mode", "shuffle_dataset",
    "pad_to_multiple_of", "eval_packing", "router_aux_loss_coef", "packing_strategy",
})
UNMODELLED = {
    "use_dora": "DoRA adds a magnitude vector per module and a larger backward",
    "lora_modules_to_save": "trains full copies of those modules", "lora_target_parameters": "adapts parameters",
    "activation_offloading": "moves activations to the CPU", "use_liger_kernel": "Liger kernels",
    "deepspeed": "DeepSpeed partitions the run", "fsdp": "FSDP shards the run", "torch_compile": "torch.compile",
    "model_init_kwargs": "extra from_pretrained arguments",
}
DTYPES = {"bfloat16": "bfloat16", "float16": "float16"}
ATTN = {None: "sdpa", "sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash_attention_2"}


def translate(data: Any) -> Translated:
    r = Reader(data, NAME, READ, IGNORED, UNMODELLED)
    notes: list[str] = []
    model = r.model("model_name_or_path")
    if not r.typed("use_peft", bool, False, note=False):
        raise QPlanError(f"{NAME} use_peft is not set: trl sft then trains every weight; qplan check prices LoRA and "
                         "QLoRA (use_peft: true)")
    four, eight = r.typed("load_in_4bit", bool, False, note=False), r.typed("load_in_8bit", bool, False, note=False)
    if r.has("dtype") and r.has("torch_dtype") and r.get("dtype") != r.get("torch_dtype"):
        raise QPlanError(f"{NAME} dtype and torch_dtype disagree; keep one")
    key = "torch_dtype" if r.has("torch_dtype") else "dtype"
    dtype = r.typed(key, str, "float32")
    if dtype not in DTYPES:
        why = "the ModelConfig default" if not r.has(key) else "as written"
        raise QPlanError(f"{NAME} {key} is {dtype} ({why}): the model loads, and 4-bit layers compute, in {dtype}; qplan "
                         "prices bfloat16 or float16 (set dtype: bfloat16)")
    quant = quantization_section(4 if four else 8 if eight else None, r.typed("bnb_4bit_quant_type", str, "nf4"),
                                 r.typed("use_bnb_nested_quant", bool, False), DTYPES[dtype])
    targets = r.get("lora_target_modules", note=False)
    lora = {"r": r.positive("lora_r", 16), "lora_alpha": r.typed("lora_alpha", (int, float), 32, note=False),
            "lora_dropout": r.typed("lora_dropout", (int, float), 0.05),
            "task_type": r.typed("lora_task_type", str, "CAUSAL_LM", note=False)}
    if targets is not None:
        lora["target_modules"] = targets_value(targets, NAME, "lora_target_modules")

    if r.has("max_length") and r.has("max_seq_length") and r.get("max_length") != r.get("max_seq_length"):
        raise QPlanError(f"{NAME} max_length and max_seq_length disagree; keep one (max_length is trl's name now)")
    length_key = "max_seq_length" if r.has("max_seq_length") else "max_length"
    seq_len = r.positive(length_key, 1024)
    fp16 = r.typed("fp16", bool, False, note=False)
    bf16 = r.typed("bf16", bool, None, note=False)
    bf16 = (not fp16) if bf16 is None else bf16
    packed, padding_free = r.typed("packing", bool, False), r.typed("padding_free", bool, False, note=False)
    training = {"per_device_train_batch_size": r.positive("per_device_train_batch_size", 8),
                "gradient_accumulation_steps": r.positive("gradient_accumulation_steps", 1),
                "optim": r.typed("optim", str, "adamw_torch_fused"), "bf16": bf16, "fp16": fp16,
                "gradient_checkpointing": r.typed("gradient_checkpointing", bool, True), "max_length": seq_len,
                "packing": packed, "padding_free": padding_free}
    notes.append(packing_note(packed or padding_free, length_key, seq_len, "packing" if packed or not padding_free else "padding_free"))
    loss = r.typed("loss_type", str, "chunked_nll", note=False)
    if loss not in ("chunked_nll", "nll", "dft"):
        raise QPlanError(f"{NAME} loss_type: {loss} is not modelled; qplan prices nll, dft and chunked_nll")
    if loss == "chunked_nll":
        notes.append(f"{NAME} loss_type chunked_nll (its default) computes the loss in chunks of tokens; qplan prices "
                     "the full float32 logits, an upper bound on that part")
    attn = r.get("attn_implementation", note=False)
    if attn not in ATTN:
        raise QPlanError(f"{NAME} attn_implementation: {attn} is not modelled; qplan prices sdpa, eager, flash_attention_2")
    notes.append(f"{NAME}'s SFTTrainer does not call prepare_model_for_kbit_training: norms and embeddings stay in {dtype}")
    out = {"model": model, "lora": lora, "training": training, "attn_implementation": ATTN[attn],
           "prepare_model_for_kbit_training": False}
    if quant:
        out["quantization"] = quant
    keys = {"training.per_device_train_batch_size": "per_device_train_batch_size",
            "training.gradient_accumulation_steps": "gradient_accumulation_steps", "training.optim": "optim",
            "training.max_length": length_key, "training.gradient_checkpointing": "gradient_checkpointing",
            "lora.r": "lora_r", "lora.lora_alpha": "lora_alpha", "lora.lora_dropout": "lora_dropout",
            "lora.target_modules": "lora_target_modules", "quantization.bnb_4bit_quant_type": "bnb_4bit_quant_type",
            "quantization.bnb_4bit_use_double_quant": "use_bnb_nested_quant", "quantization.bnb_4bit_compute_dtype": key}
    return Translated(NAME, out, Spelling(format=NAME, keys=keys, notes=notes + r.defaults_note()))


def detect_score(data: dict) -> bool:
    """trl's own keys: ModelConfig's (use_peft, lora_r without axolotl's keys, use_bnb_nested_quant) or SFTConfig's."""
    return any(key in data for key in ("use_peft", "use_bnb_nested_quant", "lora_target_modules", "lora_task_type",
                                       "dataset_name", "max_length", "model_name_or_path"))
