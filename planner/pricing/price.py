"""From what the user typed to a :class:`~planner.output.plan.Plan`: resolve model and card, price the user's
setup, search the open knobs, and when nothing fits name what would (a larger card, more cards with
FSDP-QLoRA, a smaller model of the same family), with numbers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import ceil
from typing import Callable

from planner.inputs.architecture import Architecture
from planner.inputs.catalog import catalog_models, resolve_model
from planner.memory.runtime import as_run
from planner.inputs.gpus import Gpu, catalog_gpus, resolve_gpu
from planner.output.launch import launch_hint
from planner.memory.estimate import Estimate
from planner.memory.parallel import STATUS, fsdp_recipe, parallel_estimate
from planner.memory.overhead import OverheadProfile, select_profile
from planner.memory.weights import frozen_weight_components
from planner.output.plan import Alternative, GpuInfo, Plan, plan_from_estimate
from planner.search.recommend import Search, best
from planner.inputs.settings import EXPANDABLE, Parallel, TrainSettings
from planner.inputs.units import fmt_gib

MAX_FSDP_GPUS = 16


@dataclass
class Request:
    model: str
    gpu: str
    settings: TrainSettings = field(default_factory=TrainSettings)
    fixed: set[str] = field(default_factory=set)
    parallel: Parallel = field(default_factory=Parallel)
    target_batch: int = 16
    margin: float | None = None  # share of usable memory kept free; None: the profile's margin on each estimate
    prefer: str = "seq"
    profile: str | None = None
    top: int = 5


def gpu_info(gpu: Gpu, count: int, profile: OverheadProfile, margin: float | None, expandable: bool = False) -> GpuInfo:
    """Usable = nvidia-smi total - driver reserve. The safety margin is either a share of usable memory
    (``margin``, what ``--margin`` gives: budget = usable * (1 - margin)) or, by default, the profile's
    ``safety_margin`` share of each estimate's uncertain part (budget = usable; see :func:`estimator_for`)."""
    usable = gpu.total_bytes - profile.driver_reserved_bytes
    if margin is None:
        allocator = "expandable segments" if expandable and profile.expandable_segments else "default allocator"
        rule = (f"{profile.margin_share(expandable):.0%} of the estimated (not exactly counted) part of each plan, the "
                f"worst held-out under-prediction of profile {profile.name} ({allocator})")
        budget = usable
    else:
        rule, budget = f"{margin:.0%} of usable memory (--margin)", int(usable * (1 - margin))
    return GpuInfo(name=gpu.name, label=gpu.label, count=count, total_bytes=gpu.total_bytes, usable_bytes=usable,
                   budget_bytes=budget, margin_rule=rule, bf16=gpu.bf16)


def estimator_for(arch: Architecture, profile: OverheadProfile, parallel: Parallel,
                  margin: float | None) -> Callable[[TrainSettings], Estimate]:
    """Settings -> Estimate (per GPU for several), carrying its safety margin: with no explicit
    ``margin``, ``ceil(share * uncertain_bytes)`` with the profile's share for the run's allocator setting
    (:meth:`OverheadProfile.margin_share`); an explicit one is in the budget instead."""
    def one(settings: TrainSettings) -> Estimate:
        est = parallel_estimate(arch, settings, profile, parallel)
        if margin is None:
            est = replace(est, margin_bytes=ceil(profile.margin_share(settings.expandable_segments) * est.uncertain_bytes))
        return est
    return one


def reference_settings(request: Request, arch: Architecture) -> TrainSettings:
    """A small but useful setup to judge other cards and models by: the user's fixed knobs, otherwise
    r=16, seq_len 1024 (or the model's maximum), micro-batch 1, checkpointing, paged 8-bit AdamW."""
    defaults = {
        "rank": 16, "seq_len": min(1024, arch.max_positions), "batch": 1,
        "gradient_checkpointing": True, "optim": "paged_adamw_8bit",
    }
    return request.settings.model_copy(update={k: v for k, v in defaults.items() if k not in request.fixed})


def smallest_settings(request: Request) -> TrainSettings:
    """The least memory the open knobs allow: r=8, seq_len 256, micro-batch 1, checkpointing, 8-bit state."""
    smallest = {"rank": 8, "seq_len": 256, "batch": 1, "gradient_checkpointing": True, "optim": "paged_adamw_8bit"}
    return request.settings.model_copy(update={k: v for k, v in smallest.items() if k not in request.fixed})


def make_plan(request: Request) -> Plan:
    arch = resolve_model(request.model)
    gpu = resolve_gpu(request.gpu)
    profile = select_profile(gpu.label, request.profile)
    parallel = request.parallel
    info = gpu_info(gpu, parallel.gpus, profile, request.margin, request.settings.expandable_segments)
    notes: list[str] = []
    settings = fsdp_recipe(request.settings) if parallel.sharded else request.settings
    if settings.compute_dtype == "bf16" and not gpu.bf16:
        settings = settings.model_copy(update={"compute_dtype": "fp16"})
        notes.append(f"{gpu.label} has no bf16: compute dtype falls back to fp16 (same bytes)")
    settings = as_run(arch, settings, notes)
    request = Request(**{**request.__dict__, "settings": settings})
    if arch.expert_banks:
        notes.append("MoE experts are 3-D parameters in transformers 5: bitsandbytes leaves them unquantized (16-bit, fp32 after prepare_model_for_kbit_training); all-linear LoRA also adapts them (peft target_parameters); their activations are an estimate")
    estimator = estimator_for(arch, profile, parallel, request.margin)

    search = Search(base=settings, fixed=request.fixed, max_positions=arch.max_positions, target_batch=request.target_batch)
    found = search.candidates(estimator, info.budget_bytes)
    ranked = best(found, request.prefer, request.top)
    if ranked:
        chosen = ranked[0].settings if _open_knobs(request) else settings
    else:
        chosen = smallest_settings(request) if _open_knobs(request) else settings
    plan = plan_from_estimate(arch, info, chosen, estimator(chosen), profile, parallel)
    plan.recommendations = [r.model_copy(update={"strategy": parallel.strategy}) for r in ranked] if parallel.gpus > 1 else ranked
    if found:
        plan.longest_seq_len = max(found, key=lambda r: (r.settings.seq_len, r.tokens_per_step, r.settings.rank))
        plan.largest_batch = max(found, key=lambda r: (r.settings.batch, r.settings.seq_len, r.settings.rank))
    if not plan.fits or not ranked:
        plan.alternatives = alternatives(request, arch, info, profile)
        notes.insert(0, why_not(arch, plan, info))
    if parallel.gpus > 1:
        notes.append(parallel_note(parallel))
    note = expandable_note(estimator, chosen, plan.peak_bytes, profile)
    if note:
        notes.append(note)
    plan.notes = notes
    return plan


def expandable_note(estimator: Callable[[TrainSettings], Estimate], settings: TrainSettings, peak: int,
                    profile: OverheadProfile) -> str | None:
    """What ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` would save on a plan made for the default
    allocator, where the profile has measured it."""
    if settings.expandable_segments or profile.expandable_segments is None:
        return None
    other = estimator(settings.model_copy(update={"expandable_segments": True}))
    if other.device_peak >= peak:
        return None
    return (f"with PYTORCH_CUDA_ALLOC_CONF={EXPANDABLE} torch's allocator leaves less slack: this plan would peak at "
            f"{fmt_gib(other.device_peak)} instead of {fmt_gib(peak)} (measured with profile {profile.name}); "
            "plan for it with --expandable-segments")


def parallel_note(parallel: Parallel) -> str:
    """What a multi-GPU plan is and how sure it is."""
    recipe = (" trains the FSDP-QLoRA recipe (4-bit storage in the compute dtype, 16-bit adapters, no "
              "prepare_model_for_kbit_training); " if parallel.sharded else " ")
    return f"{parallel.label}: per-GPU plan;{recipe}{STATUS[parallel.strategy]}"


def _open_knobs(request: Request) -> bool:
    return not {"rank", "seq_len", "batch"} <= request.fixed


def frozen_per_gpu(arch: Architecture, plan: Plan) -> int:
    """The frozen base model's bytes on each GPU of the plan: whole on one GPU or under DDP, none when
    offloaded, else 1/N (sharded, or split by layers)."""
    frozen = sum(frozen_weight_components(arch, plan.settings).values())
    if plan.parallel and plan.parallel.strategy != "ddp":
        frozen = 0 if plan.parallel.cpu_offload else frozen // plan.parallel.gpus
    return frozen


def why_not(arch: Architecture, plan: Plan, info: GpuInfo) -> str:
    frozen = frozen_per_gpu(arch, plan)
    what = "the frozen base model (4-bit weights plus the modules left in 16/32-bit)"
    if frozen > info.budget_bytes:
        return f"{what} alone needs {fmt_gib(frozen)}; this card has {fmt_gib(info.budget_bytes)} {_budget_words(info)}"
    return (f"even the smallest setup shown needs {fmt_gib(plan.peak_bytes)} at its peak ({plan.peak_phase}) "
            f"plus a {fmt_gib(plan.margin_bytes)} safety margin; this card has {fmt_gib(info.budget_bytes)} {_budget_words(info)}")


def _budget_words(info: GpuInfo) -> str:
    return "usable" if info.budget_bytes == info.usable_bytes else f"usable after the margin ({fmt_gib(info.usable_bytes)} before it)"


def alternatives(request: Request, arch: Architecture, info: GpuInfo, profile: OverheadProfile) -> list[Alternative]:
    reference = reference_settings(request, arch)
    need = estimator_for(arch, profile, Parallel(), request.margin)(reference)
    out: list[Alternative] = []
    ref_text = f"r={reference.rank}, seq_len {reference.seq_len}, micro-batch {reference.batch}"
    for card in catalog_gpus():
        card_info = gpu_info(card, 1, profile, request.margin)
        if need.required_bytes <= card_info.budget_bytes:
            out.append(Alternative(
                kind="larger-gpu",
                summary=f"one {card.label} ({fmt_gib(card.total_bytes)}): {ref_text} peaks at {fmt_gib(need.device_peak)}",
                peak_bytes=need.device_peak, detail={"gpu": card.name, "settings": reference.model_dump()},
            ))
            break
    more = _fewest_gpus(arch, profile, request.margin, reference, info)
    if more:
        parallel, per_gpu = more
        host = f", {fmt_gib(per_gpu.host_bytes)} of host memory" if parallel.cpu_offload else ""
        out.append(Alternative(
            kind="more-gpus",
            summary=(f"{parallel.gpus} x {info.label} with FSDP-QLoRA{' and CPU offload' if parallel.cpu_offload else ''}: "
                     f"{ref_text} needs about {fmt_gib(per_gpu.device_peak)} per GPU{host} "
                     f"(--gpus {parallel.gpus}{' --cpu-offload' if parallel.cpu_offload else ''})"),
            peak_bytes=per_gpu.device_peak,
            detail={"gpus": parallel.gpus, "strategy": "fsdp", "cpu_offload": parallel.cpu_offload,
                    "host_bytes": per_gpu.host_bytes, "settings": fsdp_recipe(reference).model_dump(),
                    "launch": launch_hint(parallel)},
        ))
    smaller = _largest_fitting_sibling(request, arch, info, profile, reference)
    if smaller:
        out.append(smaller)
    return out


def _fewest_gpus(arch, profile, margin, reference, info) -> tuple[Parallel, Estimate] | None:
    """The fewest cards of this kind that train ``reference`` with FSDP-QLoRA; with CPU offload only when no
    count up to :data:`MAX_FSDP_GPUS` fits without it (offload is slower: every step streams the weights)."""
    for offload in (False, True):
        for n in range(2, MAX_FSDP_GPUS + 1):
            parallel = Parallel(gpus=n, strategy="fsdp", cpu_offload=offload)
            per_gpu = estimator_for(arch, profile, parallel, margin)(reference)
            if per_gpu.required_bytes <= info.budget_bytes:
                return parallel, per_gpu
    return None


def _largest_fitting_sibling(request, arch, info, profile, reference) -> Alternative | None:
    entries = catalog_models()
    family = next((e.family for e in entries if e.architecture.name == arch.name), None)
    siblings = sorted(
        (e for e in entries if e.family == family and e.params < arch.total_params),
        key=lambda e: e.params, reverse=True,
    ) if family else []
    for entry in siblings:
        est = estimator_for(entry.architecture, profile, Parallel(), request.margin)(reference)
        if est.required_bytes <= info.budget_bytes:
            return Alternative(
                kind="smaller-model",
                summary=(f"{entry.slug} ({entry.params / 1e9:.1f} B params) fits this card: "
                         f"r={reference.rank}, seq_len {reference.seq_len} peaks at {fmt_gib(est.device_peak)}"),
                peak_bytes=est.device_peak, detail={"model": entry.slug},
            )
    return None
