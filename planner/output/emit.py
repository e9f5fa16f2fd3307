"""A plan's settings as a configuration to paste into the training tool (``qplan ... --emit FORMAT``,
``qplan check ... --emit FORMAT``): one function per format, :data:`EMITTERS` from format to function.

- ``python``: ``BitsAndBytesConfig``, ``from_pretrained``, ``prepare_model_for_kbit_training``, ``LoraConfig``
  and trl's ``SFTConfig`` as code (printed only: nothing here imports torch, transformers or peft);
- ``yaml``: ``qplan check``'s own config (:mod:`planner.inputs.config_file`);
- ``axolotl`` / ``llamafactory``: those tools' keys, as their readers (:mod:`planner.inputs.formats`) read them.

What ``qplan check`` reads back from each is the same settings, so it prices the same plan (tests/test_emit.py).
A setting a format cannot say is refused in one line, never dropped: LLaMA-Factory never calls
``prepare_model_for_kbit_training`` and axolotl calls it exactly for a quantized adapter; qplan's YAML turns
gradient checkpointing on with it; none of them says multi-GPU plans, full fine-tuning or 16-bit LoRA weights.
The allocator setting (``PYTORCH_CUDA_ALLOC_CONF``) is not a config key: it is given as a comment (python: a line).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from planner.errors import QPlanError
from planner.inputs.catalog import find_entry
from planner.inputs.settings import ALLOC_CONF, EXPANDABLE, TrainSettings

ATTN_LLAMAFACTORY = {"sdpa": "sdpa", "eager": "disabled", "flash_attention_2": "fa2"}
PACKING = ("packing left to you: qplan priced every sequence at the full {key}, exact with packing, the worst case "
           "without")


def hub_id(model: str) -> str:
    """The Hugging Face id of a catalogue model (what the tools load), else the name as given."""
    entry = find_entry(model)
    return getattr(entry, "hf_id", None) or model if entry else model


def _refuse(fmt: str, why: str) -> QPlanError:
    return QPlanError(f"--emit {fmt}: {why}")


def _common(s: TrainSettings, fmt: str, gpus: int) -> None:
    """What no emitted config says."""
    if gpus > 1:
        raise _refuse(fmt, f"this plan is for {gpus} GPUs; --emit writes one-GPU configs (see the plan's launch line)")
    if s.full_finetune:
        raise _refuse(fmt, "a full fine-tune is a comparison, not a LoRA config")
    if not s.adapter_fp32:
        raise _refuse(fmt, "LoRA weights in 16-bit (the FSDP-QLoRA recipe) are not a key of this format")


def _alpha(s: TrainSettings) -> int | float:
    alpha = s.alpha if s.alpha is not None else 2 * s.rank
    return int(alpha) if float(alpha).is_integer() else alpha


def _targets(s: TrainSettings) -> str | list[str]:
    return s.targets[0] if len(s.targets) == 1 else list(s.targets)


def _header(lines: list[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def _yaml(data: dict) -> str:
    import yaml  # a base dependency

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def _allocator_comment(s: TrainSettings) -> list[str]:
    return [f"launch with {ALLOC_CONF}={EXPANDABLE} (this plan assumes it)"] if s.expandable_segments else []


def emit_yaml(s: TrainSettings, model: str, gpu: str, header: list[str], gpus: int = 1) -> str:
    """qplan check's own config."""
    _common(s, "yaml", gpus)
    if s.prepare_kbit and s.quantized and not s.gradient_checkpointing:
        raise _refuse("yaml", "prepare_model_for_kbit_training with gradient checkpointing off is not a key of qplan's "
                      "config (prepare turns it on); --emit python says it")
    data: dict[str, Any] = {"model": model, "gpu": gpu}
    if s.quant in ("nf4", "fp4"):
        data["quantization"] = {"load_in_4bit": True, "bnb_4bit_quant_type": s.quant,
                                "bnb_4bit_use_double_quant": s.double_quant, "bnb_4bit_compute_dtype": s.compute_dtype_name}
    elif s.quant == "int8":
        data["quantization"] = {"load_in_8bit": True}
    data["lora"] = {"r": s.rank, "lora_alpha": _alpha(s), "target_modules": _targets(s), "lora_dropout": s.lora_dropout,
                    "task_type": "CAUSAL_LM"}
    data["training"] = {"per_device_train_batch_size": s.batch, "gradient_accumulation_steps": s.grad_accum,
                        "optim": s.optim, "bf16": s.autocast and s.compute_dtype == "bf16",
                        "fp16": s.autocast and s.compute_dtype == "fp16", "gradient_checkpointing": s.gradient_checkpointing,
                        "max_seq_length": s.seq_len}
    data["attn_implementation"] = s.attn
    data["prepare_model_for_kbit_training"] = s.prepare_kbit
    return _header(header + [PACKING.format(key="max_seq_length")] + _allocator_comment(s)) + _yaml(data)


def emit_axolotl(s: TrainSettings, model: str, gpu: str, header: list[str], gpus: int = 1) -> str:
    """axolotl's keys (planner/inputs/formats/axolotl.py has their sources)."""
    _common(s, "axolotl", gpus)
    if s.prepare_kbit != s.quantized:
        raise _refuse("axolotl", f"axolotl calls prepare_model_for_kbit_training exactly for a quantized adapter; this "
                      f"plan has prepare_kbit {str(s.prepare_kbit).lower()} with quant {s.quant}")
    if not s.autocast:
        raise _refuse("axolotl", "axolotl's bf16/fp16 turn the Trainer's autocast on; this plan has none")
    data: dict[str, Any] = {"base_model": model}
    if s.quant in ("nf4", "fp4"):
        data.update({"load_in_4bit": True, "adapter": "qlora"})
        if s.quant != "nf4" or not s.double_quant:
            data["bnb_config_kwargs"] = {"bnb_4bit_quant_type": s.quant, "bnb_4bit_use_double_quant": s.double_quant}
    else:
        data.update({"load_in_8bit": s.quant == "int8", "adapter": "lora"})
    data.update({"lora_r": s.rank, "lora_alpha": _alpha(s), "lora_dropout": s.lora_dropout})
    if s.targets == ("all-linear",):
        data["lora_target_linear"] = True
    else:
        data["lora_target_modules"] = list(s.targets)
    data.update({"sequence_len": s.seq_len, "micro_batch_size": s.batch,
                 "gradient_accumulation_steps": s.grad_accum, "optimizer": s.optim,
                 "bf16": s.compute_dtype == "bf16", "fp16": s.compute_dtype == "fp16",
                 "gradient_checkpointing": s.gradient_checkpointing, "attn_implementation": s.attn})
    notes = [PACKING.format(key="sequence_len")]
    return _header(header + notes + _allocator_comment(s)) + _yaml(data)


def emit_llamafactory(s: TrainSettings, model: str, gpu: str, header: list[str], gpus: int = 1) -> str:
    """LLaMA-Factory's keys (planner/inputs/formats/llamafactory.py has their sources)."""
    _common(s, "llamafactory", gpus)
    if s.prepare_kbit and s.quantized:
        raise _refuse("llamafactory", "LLaMA-Factory never calls prepare_model_for_kbit_training and this plan assumes it; "
                      "plan with --no-prepare-kbit to emit a LLaMA-Factory config")
    if not s.autocast:
        raise _refuse("llamafactory", "LLaMA-Factory's bf16/fp16 turn the Trainer's autocast on; this plan has none")
    data: dict[str, Any] = {"model_name_or_path": model, "stage": "sft", "do_train": True, "finetuning_type": "lora"}
    if s.quant in ("nf4", "fp4"):
        data.update({"quantization_bit": 4, "quantization_method": "bnb", "quantization_type": s.quant,
                     "double_quantization": s.double_quant})
    elif s.quant == "int8":
        data.update({"quantization_bit": 8, "quantization_method": "bnb"})
    targets = "all" if s.targets == ("all-linear",) else ",".join(s.targets)
    data.update({"lora_rank": s.rank, "lora_alpha": int(_alpha(s)), "lora_dropout": s.lora_dropout, "lora_target": targets,
                 "cutoff_len": s.seq_len,
                 "per_device_train_batch_size": s.batch, "gradient_accumulation_steps": s.grad_accum, "optim": s.optim,
                 "bf16": s.compute_dtype == "bf16", "fp16": s.compute_dtype == "fp16",
                 "disable_gradient_checkpointing": not s.gradient_checkpointing,
                 "flash_attn": ATTN_LLAMAFACTORY[s.attn]})
    notes = [PACKING.format(key="cutoff_len")]
    return _header(header + notes + _allocator_comment(s)) + _yaml(data)


def _py(value: Any) -> str:
    """A literal as Python code, strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_py, value)) + "]"
    return repr(value)


def emit_python(s: TrainSettings, model: str, gpu: str, header: list[str], gpus: int = 1) -> str:
    """transformers / peft / trl objects as code, for the QLoRA recipe with SFTTrainer."""
    _common(s, "python", gpus)
    dtype = f"torch.{s.compute_dtype_name}"
    lines = [*(f"# {line}" for line in header)]
    if s.expandable_segments:
        lines += ["import os", "", f'os.environ["{ALLOC_CONF}"] = "{EXPANDABLE}"  # before torch starts CUDA; the plan assumes it']
    lines += ["import torch", "from peft import LoraConfig" + (", prepare_model_for_kbit_training" if s.prepare_kbit else ""),
              "from transformers import AutoModelForCausalLM" + (", BitsAndBytesConfig" if s.quant != "none" else ""),
              "from trl import SFTConfig, SFTTrainer", ""]
    load = [f"    {_py(model)},"]
    if s.quant in ("nf4", "fp4"):
        lines += ["bnb_config = BitsAndBytesConfig(", "    load_in_4bit=True,", f"    bnb_4bit_quant_type={_py(s.quant)},",
                  f"    bnb_4bit_use_double_quant={s.double_quant},", f"    bnb_4bit_compute_dtype={dtype},", ")"]
        load.append("    quantization_config=bnb_config,")
    elif s.quant == "int8":
        lines += ["bnb_config = BitsAndBytesConfig(load_in_8bit=True)"]
        load.append("    quantization_config=bnb_config,")
    load += [f"    dtype={dtype},", f"    attn_implementation={_py(s.attn)},"]
    lines += ["model = AutoModelForCausalLM.from_pretrained(", *load, ")"]
    if s.prepare_kbit:
        lines.append(f"model = prepare_model_for_kbit_training(model, use_gradient_checkpointing={s.gradient_checkpointing})")
    lines += ["lora_config = LoraConfig(", f"    r={s.rank},", f"    lora_alpha={_py(_alpha(s))},",
              f"    target_modules={_py(_targets(s))},", f"    lora_dropout={_py(s.lora_dropout)},", '    bias="none",',
              '    task_type="CAUSAL_LM",', ")",
              "training_args = SFTConfig(", '    output_dir="out",', f"    per_device_train_batch_size={s.batch},",
              f"    gradient_accumulation_steps={s.grad_accum},", f"    optim={_py(s.optim)},",
              f"    bf16={s.autocast and s.compute_dtype == 'bf16'},", f"    fp16={s.autocast and s.compute_dtype == 'fp16'},",
              f"    gradient_checkpointing={s.gradient_checkpointing},",
              f"    max_length={s.seq_len},  # " + PACKING.format(key="max_length"), ")",
              "trainer = SFTTrainer(model=model, args=training_args, peft_config=lora_config, train_dataset=...)", ""]
    return "\n".join(lines)


EMITTERS: dict[str, Callable[..., str]] = {
    "python": emit_python, "yaml": emit_yaml, "axolotl": emit_axolotl, "llamafactory": emit_llamafactory,
}


def emit(fmt: str, settings: TrainSettings, model: str, gpu: str, header: list[str], gpus: int = 1) -> str:
    """``settings`` for ``model`` (a catalogue name is written as its hub id) as format ``fmt``."""
    if fmt not in EMITTERS:
        raise QPlanError(f"--emit {fmt}: expected one of {', '.join(EMITTERS)}")
    return EMITTERS[fmt](settings, hub_id(model), gpu, header, gpus)


def emit_plan(plan, fmt: str, settings: TrainSettings | None = None, peak_bytes: int | None = None,
              why: str = "the plan") -> str:
    """A :class:`~planner.output.plan.Plan` (or ``settings`` that replace its own, as ``qplan check``'s smallest
    change does) as format ``fmt``, with a header saying what qplan predicted."""
    from planner.inputs.units import fmt_gib

    settings = settings or plan.settings
    peak = plan.peak_bytes if peak_bytes is None else peak_bytes
    gpus = plan.parallel.gpus if plan.parallel else 1
    header = [f"qplan: {why} for {plan.model.name} on {plan.gpu.label}: peak {fmt_gib(peak)} of "
              f"{fmt_gib(plan.gpu.budget_bytes)} usable"]
    return emit(fmt, settings, plan.model.name, plan.gpu.name, header, gpus)
