"""Pre-flight check of one exact training run: will it fit, and if not, the smallest change that does.

    from planner.preflight import preflight, WillNotFit
    plan = preflight("llama-3.1-8b", bnb_config, lora_config, training_args, gpu="rtx4090", max_seq_length=2048)

The arguments may be the real ``BitsAndBytesConfig`` / ``LoraConfig`` / ``TrainingArguments`` (or trl
``SFTConfig``) objects, read by attribute (nothing is imported), or plain dicts with the same names; they
go through the same sections as a ``qplan check`` config file (:mod:`planner.inputs.config_file`).

**Smallest change** (searched with :func:`planner.memory.estimate` over the knobs below), best first:

1. fewest knobs changed; the micro-batch split is one knob: ``per_device_train_batch_size`` goes down to a
   divisor and ``gradient_accumulation_steps`` up by the same factor, so the effective batch is kept;
2. then the least loss of data per step: the longest ``max_seq_length``, then the most tokens per optimizer
   step (``batch * grad_accum * seq_len``);
3. then the mildest kind of change: only slower (gradient checkpointing on, a smaller micro-batch split) <
   8-bit optimizer state or quantization constants (8-bit / paged AdamW, double quantization) < a lower
   LoRA rank;
4. then the most kept: highest rank, 32-bit optimizer state, largest micro-batch, checkpointing off;
   last, the lower peak.

Candidate values: checkpointing on; micro-batch divisors of the current one; the AdamW family
(``adamw_torch``, ``adamw_8bit``, ``paged_adamw_32bit``, ``paged_adamw_8bit``; Adafactor and SGD are not
swapped in, they change the algorithm); double quantization on (4-bit only); ranks from
:data:`planner.inputs.settings.RANKS` below the current one; seq_len in multiples of 128 below the current one
(binary search: memory grows with seq_len). Nothing that fits on this card: the plan's alternatives
(larger card, more GPUs with FSDP-QLoRA, a smaller model of the family).
"""

from __future__ import annotations

import itertools
import os
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from planner.inputs.architecture import Architecture, from_config
from planner.memory.runtime import as_run
from planner.inputs.catalog import resolve_model
from planner.inputs.config_file import SECTIONS, Mapped, RunConfig, parse_config, show, to_settings
from planner.errors import QPlanError
from planner.inputs.gpus import Gpu, resolve_gpu
from planner.memory.estimate import Estimate
from planner.memory.overhead import select_profile
from planner.output.plan import Plan, plan_from_estimate
from planner.pricing.price import Request, alternatives, estimator_for, frozen_per_gpu, gpu_info, parallel_note
from planner.inputs.settings import ALLOC_CONF, RANKS, Parallel, TrainSettings, expandable_in
from planner.inputs.units import fmt_gib

ADAMW_FAMILY = ("paged_adamw_32bit", "adamw_torch", "paged_adamw_8bit", "adamw_8bit")
# kind of change -> how much of the run it gives up (rule 3 above; seq_len is ranked by rule 2)
TIERS = {"gradient_checkpointing": 0, "micro_batch": 0, "double_quant": 1, "optim": 1, "rank": 2, "seq_len": 3}
SEQ_STEP = 128
API_LABELS = {"quantization": "quantization_config", "lora": "lora_config", "training": "training_args"}


class Change(BaseModel):
    """One line of the patch: ``training.max_seq_length: 2048 -> 1024``."""

    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {show(self.old)} -> {show(self.new)}"


class Suggestion(BaseModel):
    changes: list[Change]
    settings: TrainSettings
    peak_bytes: int
    headroom_bytes: int
    tokens_per_step: int = Field(description="batch * grad_accum * seq_len after the change")
    rule: str = ("fewest knobs changed, then the longest seq_len and most tokens per step kept, "
                 "then the mildest kind: slower < 8-bit state < lower rank")


class WillNotFit(Exception):
    """The run will not fit; ``.plan`` is its plan, ``.suggestion`` the smallest change that fits (or None:
    then ``.plan.alternatives`` says what would work instead)."""

    def __init__(self, plan: Plan, suggestion: Suggestion | None):
        self.plan, self.suggestion = plan, suggestion
        super().__init__(describe_failure(plan, suggestion))


@dataclass
class Run:
    """One exact run: the model's shapes, the card, and the mapped settings."""

    arch: Architecture
    mapped: Mapped
    gpu: str | Gpu = "auto"  # a spec for resolve_gpu, or a card already resolved
    gpus: int = 1
    margin: float | None = None  # None: the overhead profile's safety_margin


@dataclass
class CheckResult:
    plan: Plan
    suggestion: Suggestion | None

    @property
    def fits(self) -> bool:
        return self.plan.fits


# ---- building a Run ----------------------------------------------------------------------------------


def resolve_arch(model: Any) -> Architecture:
    """A catalogue alias / path / hub id (``planner.inputs.catalog.resolve_model``), a config dict, a transformers
    ``PretrainedConfig`` (``.to_dict()``) or a model (``.config``)."""
    if isinstance(model, str):
        return resolve_model(model)
    config = getattr(model, "config", model)
    config = config.to_dict() if hasattr(config, "to_dict") else config
    if not isinstance(config, Mapping):
        raise QPlanError(f"model must be a name, a config dict, a transformers config or model; got {type(model).__name__}")
    config = dict(config)
    return from_config(config, name=str(config.get("_name_or_path") or config.get("model_type") or "model"))


def run_from_config(config: RunConfig, *, arch: Architecture | None = None, margin: float | None = None,
                    labels: Mapping[str, str] | None = None) -> Run:
    arch = arch or resolve_arch(config.model)
    return Run(arch=arch, mapped=to_settings(config, arch.model_type, labels), gpu=config.gpu, gpus=config.gpus, margin=margin)


def section_dict(obj: Any, name: str) -> dict | None:
    """A dict as given, or the fields of a real HF object that qplan reads (modelled and refused ones)."""
    if obj is None or isinstance(obj, Mapping):
        return None if obj is None else dict(obj)
    cls = SECTIONS[name]
    return {key: getattr(obj, key) for key in (*cls.model_fields, *sorted(cls.UNMODELLED)) if hasattr(obj, key)}


def run_from_objects(model: Any, quantization_config: Any = None, lora_config: Any = None, training_args: Any = None,
                     *, gpu: str | Gpu = "auto", gpus: int = 1, max_seq_length: int | None = None,
                     prepare_model_for_kbit_training: bool | None = None, attn_implementation: str | None = None,
                     margin: float | None = None) -> Run:
    """The :class:`Run` of live HF objects or dicts (see module doc)."""
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
    run = run_from_config(config, arch=resolve_arch(model), margin=margin, labels=API_LABELS)
    run.gpu = gpu
    if expandable_in(os.environ.get(ALLOC_CONF)):  # this process is the training run: its allocator setting
        run.mapped.settings = run.mapped.settings.model_copy(update={"expandable_segments": True})
    return run


# ---- the check ----------------------------------------------------------------------------------------


def check(run: Run) -> CheckResult:
    """The plan of the run exactly as configured; when it does not fit, ``plan.notes[0]`` says why and the
    smallest change that fits is searched, or (nothing fits on this card) ``plan.alternatives`` are filled
    by :func:`planner.pricing.price.alternatives`."""
    gpu = run.gpu if isinstance(run.gpu, Gpu) else resolve_gpu(run.gpu)
    profile = select_profile(gpu.label)
    info = gpu_info(gpu, run.gpus, profile, run.margin, run.mapped.settings.expandable_segments)
    settings, arch = run.mapped.settings, run.arch
    notes = list(run.mapped.notes)
    settings = as_run(arch, settings, notes, strict=True)
    parallel = Parallel(gpus=run.gpus)
    estimator = estimator_for(arch, profile, parallel, run.margin)
    plan = plan_from_estimate(arch, info, settings, estimator(settings), profile, parallel)
    if settings.compute_dtype == "bf16" and settings.autocast and not gpu.bf16:
        notes.append(f"{gpu.label} has no bf16: the Trainer refuses bf16=True there; fp16 costs the same bytes")
    if run.gpus > 1:
        notes.append(parallel_note(parallel))
    suggestion = None
    if not plan.fits:
        notes.insert(0, why(arch, plan))
        suggestion = smallest_change(run.mapped, estimator, info.budget_bytes)
        if suggestion is None:
            request = Request(model=arch.name, gpu=gpu.name, settings=settings, fixed=run.mapped.fixed,
                              parallel=parallel, margin=run.margin)
            plan.alternatives = alternatives(request, arch, info, profile)
    plan.notes = notes
    return CheckResult(plan, suggestion)


def why(arch: Architecture, plan: Plan) -> str:
    """Why the run does not fit: the frozen model alone, or the largest parts of the peak."""
    budget = f"{fmt_gib(plan.gpu.budget_bytes)} this card has"
    frozen = frozen_per_gpu(arch, plan)
    if frozen > plan.gpu.budget_bytes:
        return (f"the frozen model alone (4-bit weights plus the modules kept in 16/32-bit) needs {fmt_gib(frozen)}, "
                f"more than the {budget}, so no setting of this run fits here; the run as configured peaks at "
                f"{fmt_gib(plan.peak_bytes)}")
    largest = sorted(plan.breakdown.items(), key=lambda item: -item[1])[:3]
    parts = ", ".join(f"{name} {fmt_gib(size)}" for name, size in largest)
    return (f"peak {fmt_gib(plan.peak_bytes)} ({plan.peak_phase}) plus its {fmt_gib(plan.margin_bytes)} safety margin "
            f"is {fmt_gib(-plan.headroom_bytes)} over the {budget}; largest parts: {parts}")


def preflight(model: Any, quantization_config: Any = None, lora_config: Any = None, training_args: Any = None,
              gpu: str = "auto", gpus: int = 1, *, max_seq_length: int | None = None,
              prepare_model_for_kbit_training: bool | None = None, attn_implementation: str | None = None,
              margin: float | None = None) -> Plan:
    """The plan of this exact run; raises :class:`WillNotFit` (with ``.plan`` and ``.suggestion``) when it
    will not fit, :class:`~planner.errors.QPlanError` for input qplan cannot read.

    ``max_seq_length`` is needed with a plain ``TrainingArguments`` (it has no sequence length; trl's
    ``SFTConfig.max_length`` is read). ``prepare_model_for_kbit_training`` defaults to true for a quantized
    model, as in the QLoRA recipe."""
    run = run_from_objects(
        model, quantization_config, lora_config, training_args, gpu=gpu, gpus=gpus, max_seq_length=max_seq_length,
        prepare_model_for_kbit_training=prepare_model_for_kbit_training, attn_implementation=attn_implementation,
        margin=margin,
    )
    result = check(run)
    if not result.fits:
        raise WillNotFit(result.plan, result.suggestion)
    return result.plan


# ---- smallest change ------------------------------------------------------------------------------------


def _divisors(n: int) -> list[int]:
    return [d for d in range(n - 1, 0, -1) if n % d == 0]


def knob_options(settings: TrainSettings) -> dict[str, list[dict]]:
    """Kind of change -> the updates it may make (all but seq_len, which is searched by bisection)."""
    s = settings
    options: dict[str, list[dict]] = {}
    if not s.gradient_checkpointing:
        options["gradient_checkpointing"] = [{"gradient_checkpointing": True}]
    if s.batch > 1:
        options["micro_batch"] = [{"batch": b, "grad_accum": s.grad_accum * s.batch // b} for b in _divisors(s.batch)]
    if s.quant in ("nf4", "fp4") and not s.double_quant:
        options["double_quant"] = [{"double_quant": True}]
    if s.optim in ADAMW_FAMILY:
        options["optim"] = [{"optim": o} for o in ADAMW_FAMILY if o != s.optim]
    if not s.full_finetune:
        options["rank"] = [{"rank": r} for r in sorted(RANKS, reverse=True) if r < s.rank]
    return {kind: values for kind, values in options.items() if values}


def seq_options(seq_len: int) -> list[int]:
    """Shorter seq_len candidates, shortest first: multiples of 128 below ``seq_len``, or halves below 128."""
    if seq_len > SEQ_STEP:
        return list(range(SEQ_STEP, seq_len, SEQ_STEP))
    return sorted({seq_len >> k for k in range(1, 8) if seq_len >> k >= 16})


def _rank_key(kinds: tuple[str, ...], s: TrainSettings, peak: int) -> tuple:
    """Smaller is a smaller change: rules 1-4 of the module doc in order, then the lower peak."""
    tiers = [TIERS[k] for k in kinds]
    return (len(kinds), -s.seq_len, -s.tokens * s.grad_accum, max(tiers, default=-1), sum(tiers), -s.rank,
            s.optim.endswith("8bit"), -s.batch, s.gradient_checkpointing, peak)


def smallest_change(mapped: Mapped, estimator: Callable[[TrainSettings], Estimate], budget: int) -> Suggestion | None:
    """The smallest change (module doc) that brings the peak within ``budget``; None when nothing does."""
    base = mapped.settings
    options = knob_options(base)
    seqs = seq_options(base.seq_len)
    best: tuple | None = None
    kinds_all = list(options)
    for n in range(0, len(kinds_all) + 1):
        for kinds in itertools.combinations(kinds_all, n):
            for updates in itertools.product(*(options[k] for k in kinds)):
                update = {key: value for part in updates for key, value in part.items()}
                for with_seq in (False, True):
                    if with_seq and not seqs:
                        continue
                    found = _fit(base.model_copy(update=update), estimator, budget, seqs if with_seq else None)
                    if found is None:
                        continue
                    settings, est = found
                    used = kinds + (("seq_len",) if with_seq else ())
                    key = _rank_key(used, settings, est.required_bytes)
                    if best is None or key < best[0]:
                        best = (key, used, settings, est)
        if best is not None and best[0][0] <= n:
            break  # every later combination changes more than n knobs
    if best is None:
        return None
    _, used, settings, est = best
    return Suggestion(
        changes=_changes(mapped, used, settings), settings=settings, peak_bytes=est.device_peak,
        headroom_bytes=budget - est.required_bytes, tokens_per_step=settings.tokens * settings.grad_accum,
    )


def _fit(settings: TrainSettings, estimator, budget: int, seqs: list[int] | None):
    """(settings, estimate) that fit: as given, or (``seqs``) with the longest seq_len in ``seqs`` that fits."""
    if seqs is None:
        est = estimator(settings)
        return (settings, est) if est.required_bytes <= budget else None
    lo, hi, found = 0, len(seqs) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        trial = settings.model_copy(update={"seq_len": seqs[mid]})
        est = estimator(trial)
        if est.required_bytes <= budget:
            found, lo = (trial, est), mid + 1
        else:
            hi = mid - 1
    return found


def _changes(mapped: Mapped, kinds: tuple[str, ...], new: TrainSettings) -> list[Change]:
    fields = {
        "gradient_checkpointing": ("gradient_checkpointing",), "micro_batch": ("batch", "grad_accum"),
        "double_quant": ("double_quant",), "optim": ("optim",), "rank": ("rank",), "seq_len": ("seq_len",),
    }
    changes = []
    for kind in kinds:
        for setting in fields[kind]:
            value = getattr(new, setting)
            changes.append(Change(
                field=mapped.paths[setting], old=mapped.written[setting],
                new=value,  # every TrainSettings.optim name is also a TrainingArguments.optim name
            ))
    return changes


# ---- words -----------------------------------------------------------------------------------------------


def describe_failure(plan: Plan, suggestion: Suggestion | None) -> str:
    """One paragraph: the reason (``plan.notes[0]``, put there by :func:`check`), then the smallest change
    or the alternatives."""
    g = plan.gpu
    head = f"{plan.model.name} will not fit on {f'{g.count} x ' if g.count > 1 else ''}{g.label}: {plan.notes[0]}"
    if suggestion:
        return f"{head}. Smallest change that fits: {'; '.join(map(str, suggestion.changes))} (peak {fmt_gib(suggestion.peak_bytes)})"
    instead = "; ".join(alt.summary for alt in plan.alternatives) or "no catalogued card or model fits it either"
    return f"{head}. Nothing on this card fits; instead: {instead}"


class _CallableModule(types.ModuleType):
    """``planner.preflight`` is this module and, called, :func:`preflight`: ``planner.preflight(model, ...)``."""

    def __call__(self, *args, **kwargs) -> Plan:
        return preflight(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
