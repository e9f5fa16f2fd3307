"""``QPlanCallback``: the pre-flight check inside a running ``transformers.Trainer`` (or trl ``SFTTrainer``),
then the measured peak against the plan.

    from planner.integrations import QPlanCallback
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[QPlanCallback()])

This module imports ``transformers``; ``import planner`` does not load it until ``planner.QPlanCallback`` is
first used.

**on_train_begin** plans the run from the live trainer: the architecture from ``model.config.to_dict()``;
``model.config.quantization_config`` (BitsAndBytesConfig); the active adapter's ``LoraConfig`` from
``model.peft_config``; ``args`` (TrainingArguments, or trl's SFTConfig: ``max_length`` / ``max_seq_length``,
``packing``); whether ``prepare_model_for_kbit_training`` ran (a 4-bit model whose input embeddings are
float32) and whether checkpointing is on (``model.is_activation_checkpointing`` or ``args``); the card from
``gpu`` ("auto": NVML).

**Will not fit** (default ``on_will_not_fit="raise"``): the reason and the smallest change are logged,
``control.should_training_stop`` is set, the plan is written to the JSON file, and :class:`WillNotFit` is
raised, so ``trainer.train()`` ends before the first step with nothing trained and no GPU time spent.
Raising is the only way to stop before step 1: transformers 5.23 runs the first optimizer step before it
first reads ``should_training_stop`` (``trainer.py`` ``_inner_training_loop`` / ``_run_epoch``).
``on_will_not_fit="warn"`` logs and trains anyway.

**Measuring** (CUDA only): after each of the first ``measure_steps`` optimizer steps, the peaks since
``on_train_begin`` (``torch.cuda.reset_peak_memory_stats`` there): ``max_memory_allocated``,
``max_memory_reserved`` and NVML's memory in use (this process where the driver reports it, else the
whole device; read at step end, when the caching allocator still holds the reserved peak), against the
plan's allocated / reserved / device peaks. Each reading goes into ``state.log_history`` (so into
``trainer_state.json``) and into ``args.output_dir/qplan_memory.json``; a difference above ``tolerance``
(5%) is logged as a warning.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel
from transformers import TrainerCallback

from planner import __version__
from planner.errors import QPlanError
from planner.inputs.gpus import Gpu, resolve_gpu
from planner.inputs.units import GiB
from planner.output.plan import Plan
from planner.preflight import WillNotFit, describe_failure, request_from_objects, section_dict, with_trace
from planner.pricing.price import Priced, price
from planner.search.smallest_change import Suggestion

logger = logging.getLogger("qplan")
JSON_NAME = "qplan_memory.json"
METRICS = (  # measured key -> the plan's prediction of it
    ("max_memory_allocated", "allocated_peak_bytes"),
    ("max_memory_reserved", "reserved_peak_bytes"),
    ("nvml_used", "peak_bytes"),
)


class Reading(BaseModel):
    step: int
    max_memory_allocated: int
    max_memory_reserved: int
    nvml_used: int | None = None
    nvml_source: str | None = None  # "process" or "device"


class Comparison(BaseModel):
    predicted: int
    measured: int
    error: float  # (measured - predicted) / predicted


class MemoryReport(BaseModel):
    """``qplan_memory.json``."""

    qplan: str = __version__
    written: str
    fits: bool | None = None
    skipped: str | None = None
    plan: Plan | None = None
    suggestion: Suggestion | None = None
    live_trainable_params: int | None = None
    readings: list[Reading] = []
    comparison: dict[str, Comparison] = {}
    warnings: list[str] = []
    environment: dict[str, str | None] = {}


def live_run_inputs(model: Any, args: Any) -> dict:
    """What :func:`planner.preflight.request_from_objects` needs, read off a live (peft) model and its args."""
    import torch

    config = model.config
    peft_configs = getattr(model, "peft_config", None) or {}
    adapter = getattr(model, "active_adapter", None)
    adapter = adapter if isinstance(adapter, str) else next(iter(peft_configs), None)
    if adapter not in peft_configs:
        raise QPlanError("QPlanCallback: the model has no peft LoRA adapter (get_peft_model, or SFTTrainer(peft_config=...))")
    quant = getattr(config, "quantization_config", None)
    if isinstance(quant, dict):  # a config that went through to_dict(): read it like the object
        quant = SimpleNamespace(**quant)
    loaded_4bit = bool(getattr(model, "is_loaded_in_4bit", False) or getattr(quant, "load_in_4bit", False))
    loaded_8bit = bool(getattr(model, "is_loaded_in_8bit", False) or getattr(quant, "load_in_8bit", False))
    embeddings = model.get_input_embeddings().weight
    if not (loaded_4bit or loaded_8bit) and getattr(model, "dtype", None) == torch.float32:
        raise QPlanError("QPlanCallback: the model is loaded in float32 and not quantized; qplan prices 16-bit "
                         "(bf16/fp16) or bitsandbytes 4-/8-bit base models, so it will not guess this one")
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    training = section_dict(args, "training")
    training.pop("activation_checkpointing", None)
    training["gradient_checkpointing"] = bool(checkpointing or getattr(args, "activation_checkpointing", None)
                                              or getattr(args, "gradient_checkpointing", False))
    return {
        "model": config,
        "quantization_config": quant if (quant is not None and (loaded_4bit or getattr(quant, "load_in_8bit", False))) else None,
        "lora_config": peft_configs[adapter],
        "training_args": training,
        "prepare_model_for_kbit_training": loaded_4bit and embeddings.dtype == torch.float32,
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }


def auto_gpu() -> Gpu:
    """``gpu="auto"`` on a CUDA machine: NVML's card (:func:`planner.inputs.gpus.resolve_gpu`); without NVML's
    Python binding, the catalogue card of torch's device name, else torch's ``total_memory``."""
    import torch

    try:
        return resolve_gpu("auto")
    except QPlanError:
        name = torch.cuda.get_device_name()
        try:
            return resolve_gpu(name)
        except QPlanError:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            return Gpu(name=name, label=name, total_bytes=props.total_memory, bf16=props.major >= 8,
                       source="torch.cuda.get_device_properties().total_memory (no NVML binding here)")


def _environment() -> dict[str, str | None]:
    import torch

    env: dict[str, str | None] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "peft", "bitsandbytes", "trl"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # not installed, or broken on this machine: record that it is absent
            env[name] = None
    env["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return env


class QPlanCallback(TrainerCallback):
    """Pre-flight check at ``on_train_begin`` and measured peaks after the first steps (module doc)."""

    def __init__(self, gpu: str = "auto", gpus: int = 1, *, max_seq_length: int | None = None,
                 measure_steps: int = 3, tolerance: float = 0.05, margin: float | None = None,
                 on_will_not_fit: str = "raise", json_name: str = JSON_NAME, trace: bool | None = None):
        if on_will_not_fit not in ("raise", "warn"):
            raise QPlanError(f"on_will_not_fit={on_will_not_fit!r}: use 'raise' (stop before step 1) or 'warn'")
        self.gpu, self.gpus, self.max_seq_length = gpu, gpus, max_seq_length
        self.measure_steps, self.tolerance, self.margin = measure_steps, tolerance, margin
        self.on_will_not_fit, self.json_name, self.trace = on_will_not_fit, json_name, trace
        self.result: Priced | None = None
        self.report: MemoryReport | None = None
        self._nvml = None

    # ---- plan -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        self.report = MemoryReport(written="", environment=_environment())
        if self.gpu == "auto" and not torch.cuda.is_available():
            self.report.skipped = "no CUDA GPU and gpu='auto': nothing to plan for (give gpu='24GB' or a card name)"
            logger.warning("qplan: %s", self.report.skipped)
            self._write(args, state)
            return control
        result = self._plan(model, args)
        self._log_plan(state, result.plan)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._write(args, state)
        return self._verdict(args, state, control, result)

    def _plan(self, model, args) -> Priced:
        """The live run's plan; a trainable count that differs from the plan's is a warning."""
        gpu = auto_gpu() if self.gpu == "auto" else self.gpu
        request = request_from_objects(**live_run_inputs(model, args), gpu=gpu, gpus=self.gpus,
                                       max_seq_length=self.max_seq_length, margin=self.margin)
        self.result = result = price(with_trace(request, self.trace))
        self.report.plan, self.report.suggestion, self.report.fits = result.plan, result.suggestion, result.fits
        self.report.live_trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if self.report.live_trainable_params != result.plan.trainable_params:
            self._warn(f"the model trains {self.report.live_trainable_params:,} parameters, the plan "
                       f"{result.plan.trainable_params:,}: a LoRA option qplan does not read may be in use")
        return result

    @staticmethod
    def _log_plan(state, plan: Plan) -> None:
        state.log_history.append({
            "qplan/fits": plan.fits, "qplan/predicted_peak_gib": plan.peak_bytes / GiB,
            "qplan/predicted_allocated_gib": plan.allocated_peak_bytes / GiB,
            "qplan/budget_gib": plan.gpu.budget_bytes / GiB, "step": state.global_step,
        })

    def _verdict(self, args, state, control, result: Priced):
        """Fits: log it. Does not: warn and train (``on_will_not_fit="warn"``) or stop before step 1."""
        plan = result.plan
        if result.fits:
            logger.info("qplan: fits on %s: predicted peak %.2f GiB, headroom %.2f GiB", plan.gpu.label,
                        plan.peak_bytes / GiB, plan.headroom_bytes / GiB)
            return control
        message = describe_failure(plan, result.suggestion)
        if self.on_will_not_fit == "warn":
            self._warn(message + " (training anyway: on_will_not_fit='warn')")
            self._write(args, state)
            return control
        logger.error("qplan: %s", message)
        control.should_training_stop = True
        raise WillNotFit(plan, result.suggestion)

    # ---- measure ----------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if self.result is None or not torch.cuda.is_available() or state.global_step > self.measure_steps:
            return control
        torch.cuda.synchronize()
        reading = Reading(step=state.global_step, max_memory_allocated=torch.cuda.max_memory_allocated(),
                          max_memory_reserved=torch.cuda.max_memory_reserved())
        reading.nvml_used, reading.nvml_source = self._nvml_used()
        self.report.readings.append(reading)
        plan, entry = self.result.plan, {"step": state.global_step}
        for measured_key, predicted_key in METRICS:
            measured = max((getattr(r, measured_key) or 0) for r in self.report.readings)
            if not measured:
                continue
            predicted = getattr(plan, predicted_key)
            error = (measured - predicted) / predicted
            self.report.comparison[measured_key] = Comparison(predicted=predicted, measured=measured, error=error)
            entry[f"qplan/{measured_key}_gib"] = measured / GiB
            entry[f"qplan/{measured_key}_error"] = error
        state.log_history.append(entry)
        if state.global_step == self.measure_steps or state.global_step == state.max_steps:
            for key, comp in self.report.comparison.items():
                if abs(comp.error) > self.tolerance:
                    self._warn(f"measured {key} {comp.measured / GiB:.2f} GiB vs predicted "
                               f"{comp.predicted / GiB:.2f} GiB ({100 * comp.error:+.1f}%)")
        self._write(args, state)
        return control

    def _nvml_used(self) -> tuple[int | None, str | None]:
        if self._nvml is None:
            from planner.measure.nvml import Nvml  # pynvml, imported there; None readings without it

            import torch

            self._nvml = Nvml(torch.cuda.current_device())
        used = self._nvml.process_used()
        if used is not None:
            return used, "process"
        used = self._nvml.used()
        return (used, "device") if used is not None else (None, None)

    # ---- output -----------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        logger.warning("qplan: %s", message)
        self.report.warnings.append(message)

    def _write(self, args, state) -> None:
        if not getattr(state, "is_world_process_zero", True) or not args.output_dir:
            return
        self.report.written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        path = Path(args.output_dir) / self.json_name
        os.makedirs(path.parent, exist_ok=True)
        path.write_text(json.dumps(self.report.model_dump(mode="json"), indent=2) + "\n")

