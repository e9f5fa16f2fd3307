"""Pre-flight check of one exact training run: will it fit, and if not, the smallest change that does.

    from planner.preflight import preflight, WillNotFit
    plan = preflight("llama-3.1-8b", bnb_config, lora_config, training_args, gpu="rtx4090", max_seq_length=2048)

The arguments may be the real ``BitsAndBytesConfig`` / ``LoraConfig`` / ``TrainingArguments`` (or trl
``SFTConfig``) objects, read by attribute (nothing is imported), or plain dicts with the same names; they
go through the same sections as a ``qplan check`` config file (:mod:`planner.inputs.config_file`). This module
only adapts them into a :class:`~planner.pricing.price.PlanRequest`: the plan, the smallest change
(:mod:`planner.search.smallest_change`) and the alternatives come from :func:`planner.pricing.price.price`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from planner.errors import QPlanError
from planner.inputs.architecture import Architecture, from_config
from planner.memory.runtime import as_run
from planner.inputs.catalog import resolve_model
from planner.inputs.config_file import SECTIONS, RunConfig, Spelling, parse_config, to_settings
from planner.inputs.gpus import Gpu, resolve_gpu
from planner.inputs.settings import ALLOC_CONF, EXPANDABLE, Parallel, expandable_in
from planner.inputs.units import fmt_gib
from planner.output.plan import Plan
from planner.pricing.price import PlanRequest, Priced, price
from planner.search.smallest_change import Suggestion

API_LABELS = {"quantization": "quantization_config", "lora": "lora_config", "training": "training_args"}


class WillNotFit(Exception):
    """The run will not fit; ``.plan`` is its plan, ``.suggestion`` the smallest change that fits (or None:
    then ``.plan.alternatives`` says what would work instead)."""

    def __init__(self, plan: Plan, suggestion: Suggestion | None):
        self.plan, self.suggestion = plan, suggestion
        super().__init__(describe_failure(plan, suggestion))


def resolve_arch(model: Any) -> Architecture:
    """A catalogue alias / path / hub id (``planner.inputs.catalog.resolve_model``), a config dict, a
    transformers ``PretrainedConfig`` (``.to_dict()``) or a model (``.config``)."""
    if isinstance(model, str):
        return resolve_model(model)
    config = getattr(model, "config", model)
    config = config.to_dict() if hasattr(config, "to_dict") else config
    if not isinstance(config, Mapping):
        raise QPlanError(f"model must be a name, a config dict, a transformers config or model; got {type(model).__name__}")
    config = dict(config)
    return from_config(config, name=str(config.get("_name_or_path") or config.get("model_type") or "model"))


def request_from_config(config: RunConfig, *, arch: Architecture | None = None, gpu: str | Gpu | None = None,
                        ecc: str | None = None, margin: float | None = None,
                        labels: Mapping[str, str] | None = None, spelling: Spelling | None = None) -> PlanRequest:
    """The exact-pricing request of a config (``qplan check``): its model, card (``gpu`` and ``ecc`` override
    the config's), GPU count and mapped settings; ``spelling``: the config was another tool's (its keys in
    patches)."""
    arch = arch or resolve_arch(config.model)
    mapped = to_settings(config, arch.model_type, labels, spelling)
    gpu = gpu if gpu is not None else config.gpu
    ecc = ecc if ecc is not None else config.ecc
    return PlanRequest(arch=arch, gpu=gpu if isinstance(gpu, Gpu) else resolve_gpu(gpu, ecc=ecc), settings=mapped.settings,
                       fixed=mapped.fixed, parallel=Parallel(gpus=config.gpus), search=False, mapped=mapped,
                       notes=list(mapped.notes), margin=margin)


def section_dict(obj: Any, name: str) -> dict | None:
    """A dict as given, or the fields of a real HF object that qplan reads (modelled and refused ones)."""
    if obj is None or isinstance(obj, Mapping):
        return None if obj is None else dict(obj)
    cls = SECTIONS[name]
    return {key: getattr(obj, key) for key in (*cls.model_fields, *sorted(cls.UNMODELLED)) if hasattr(obj, key)}


def request_from_objects(model: Any, quantization_config: Any = None, lora_config: Any = None,
                         training_args: Any = None, *, gpu: str | Gpu = "auto", gpus: int = 1,
                         max_seq_length: int | None = None, prepare_model_for_kbit_training: bool | None = None,
                         attn_implementation: str | None = None, margin: float | None = None) -> PlanRequest:
    """The request of live HF objects or dicts (see module doc), in the allocator setting of this process
    (it is the training run)."""
    data: dict[str, Any] = {"model": model if isinstance(model, str) else "model", "gpus": gpus}
    for name, obj in (("quantization", quantization_config), ("lora", lora_config), ("training", training_args)):
        section = section_dict(obj, name)
        if section is not None:
            data[name] = section
    if max_seq_length is not None:  # given explicitly: wins over SFTConfig.max_length
        training = {key: value for key, value in data.get("training", {}).items() if key != "max_length"}
        data["training"] = {**training, "max_seq_length": max_seq_length}
    if prepare_model_for_kbit_training is not None:
        data["prepare_model_for_kbit_training"] = prepare_model_for_kbit_training
    if attn_implementation is not None:
        data["attn_implementation"] = attn_implementation
    config = parse_config(data, source="preflight", labels=API_LABELS)
    request = request_from_config(config, arch=resolve_arch(model), gpu=gpu, margin=margin, labels=API_LABELS)
    if expandable_in(os.environ.get(ALLOC_CONF)):
        request = with_expandable_segments(request, f"planned for {ALLOC_CONF}={EXPANDABLE} (this process's setting)")
    return request


def with_expandable_segments(request: PlanRequest, note: str) -> PlanRequest:
    """The request for a run whose allocator uses expandable segments."""
    request.settings = request.settings.model_copy(update={"expandable_segments": True})
    request.notes.append(note)
    return request


def preflight(model: Any, quantization_config: Any = None, lora_config: Any = None, training_args: Any = None,
              gpu: str = "auto", gpus: int = 1, *, max_seq_length: int | None = None,
              prepare_model_for_kbit_training: bool | None = None, attn_implementation: str | None = None,
              margin: float | None = None, trace: bool | None = None) -> Plan:
    """The plan of this exact run; raises :class:`WillNotFit` (with ``.plan`` and ``.suggestion``) when it
    will not fit, :class:`~planner.errors.QPlanError` for input qplan cannot read.

    ``max_seq_length`` is needed with a plain ``TrainingArguments`` (it has no sequence length; trl's
    ``SFTConfig.max_length`` is read). ``prepare_model_for_kbit_training`` defaults to true for a quantized
    model, as in the QLoRA recipe. ``trace`` (default: where torch, transformers, peft and bitsandbytes are
    installed, :func:`planner.trace.available.trace_by_default`) prices the run by tracing it; a trace that
    cannot run falls back to the analytic plan with a note."""
    request = request_from_objects(
        model, quantization_config, lora_config, training_args, gpu=gpu, gpus=gpus, max_seq_length=max_seq_length,
        prepare_model_for_kbit_training=prepare_model_for_kbit_training, attn_implementation=attn_implementation,
        margin=margin,
    )
    result = price(with_trace(request, trace))
    if not result.fits:
        raise WillNotFit(result.plan, result.suggestion)
    return result.plan


def with_trace(request: PlanRequest, trace: bool | None) -> PlanRequest:
    """The request priced by trace when ``trace`` says so (None: :func:`~planner.trace.available.trace_by_default`)."""
    from planner.trace.available import trace_by_default

    if trace if trace is not None else trace_by_default():
        from planner.trace.estimate import verifier

        request.verify = verifier
    return request


def describe_failure(plan: Plan, suggestion: Suggestion | None) -> str:
    """One paragraph: the reason (``plan.notes[0]``, put there by :func:`~planner.pricing.price.price`), then
    the smallest change or the alternatives."""
    g = plan.gpu
    head = f"{plan.model.name} will not fit on {f'{g.count} x ' if g.count > 1 else ''}{g.label}: {plan.notes[0]}"
    if suggestion:
        return f"{head}. Smallest change that fits: {'; '.join(map(str, suggestion.changes))} (peak {fmt_gib(suggestion.peak_bytes)})"
    instead = "; ".join(alt.summary for alt in plan.alternatives) or "no catalogued card or model fits it either"
    return f"{head}. Nothing on this card fits; instead: {instead}"


__all__ = ["Priced", "WillNotFit", "describe_failure", "preflight", "request_from_config", "request_from_objects",
           "with_expandable_segments", "with_trace"]
