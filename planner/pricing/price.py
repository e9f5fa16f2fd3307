"""The one path from inputs to a :class:`~planner.output.plan.Plan`. ``qplan``, ``qplan check``,
``preflight()``, ``QPlanCallback`` and ``qplan regress predict`` all price through :func:`price`.

    request -> overhead profile and budget (planning.margin) -> the recipe for the GPU count and the card's
    dtype -> an estimator (memory model + margin) -> either
      search: the open knobs searched (planner.search.recommend), the best plan shown, or the smallest
              settings when nothing fits; or
      exact:  the run as configured, and when it does not fit the smallest change that does
              (planner.search.smallest_change)
    -> when nothing fits on this card, what would (planner.search.alternatives) -> the notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from planner.errors import QPlanError
from planner.inputs.architecture import Architecture
from planner.inputs.catalog import resolve_model
from planner.inputs.config_file import Mapped
from planner.inputs.gpus import Gpu, resolve_gpu
from planner.inputs.settings import Parallel, TrainSettings
from planner.inputs.units import fmt_gib
from planner.memory.estimate import Estimate
from planner.memory.overhead import OverheadProfile, select_profile
from planner.memory.parallel import fsdp_recipe, parallel_estimate
from planner.memory.runtime import as_run
from planner.output.plan import Plan, plan_from_estimate
from planner.pricing import explain
from planner.pricing.margin import gpu_info, with_margin
from planner.search.alternatives import alternatives, smallest_settings
from planner.search.grid import DEFAULT_MAX_RANK
from planner.search.recommend import Estimator, ManyEstimator, Search, verified
from planner.search.smallest_change import Suggestion, smallest_change


@dataclass
class PlanRequest:
    """What to price. ``search``: the knobs not in ``fixed`` are searched (``qplan``); otherwise the run is
    priced exactly as ``settings`` say (``qplan check``), and ``mapped`` says where each knob was written so
    the smallest change can be given as a patch."""

    arch: Architecture
    gpu: Gpu
    settings: TrainSettings = field(default_factory=TrainSettings)
    fixed: set[str] = field(default_factory=set)
    parallel: Parallel = field(default_factory=Parallel)
    search: bool = True
    mapped: Mapped | None = None
    notes: list[str] = field(default_factory=list)  # from reading the inputs
    target_batch: int = 16
    max_rank: int = DEFAULT_MAX_RANK
    margin: float | None = None  # share of usable memory kept free; None: the profile's margin on each estimate
    prefer: str = "seq"
    profile: str | None = None
    top: int = 5
    # re-prices the plan and the search's top plans (--trace: planner.trace.estimate.verifier, several
    # settings at once); the pricing stage never imports the tracer itself
    verify: Callable[[Architecture, Parallel, OverheadProfile], ManyEstimator] | None = None

    @classmethod
    def named(cls, model: str, gpu: str, ecc: str | None = None, **fields) -> PlanRequest:
        """The request for a model and card as the user names them (``--model``, ``--gpu``, ``--ecc``)."""
        return cls(arch=resolve_model(model), gpu=resolve_gpu(gpu, ecc=ecc), **fields)


@dataclass
class Priced:
    plan: Plan
    suggestion: Suggestion | None = None  # exact pricing only: the smallest change that fits

    @property
    def fits(self) -> bool:
        return self.plan.fits


def estimator_for(arch: Architecture, profile: OverheadProfile, parallel: Parallel,
                  margin: float | None) -> Estimator:
    """Settings -> Estimate (per GPU for several), carrying its safety margin (planner.pricing.margin)."""
    return _with_margin(lambda settings: parallel_estimate(arch, settings, profile, parallel), profile, margin)


def _with_margin(estimator: Estimator, profile: OverheadProfile, margin: float | None) -> Estimator:
    def one(settings: TrainSettings) -> Estimate:
        return with_margin(estimator(settings), profile, margin, settings.expandable_segments)
    return one


def recipe(request: PlanRequest) -> tuple[TrainSettings, list[str]]:
    """The settings that will run: FSDP-QLoRA's recipe when sharded, fp16 compute on a card without bf16, and
    what the libraries make of the rest (:func:`planner.memory.runtime.as_run`; exact pricing of a written
    config refuses a setting they would refuse)."""
    settings = fsdp_recipe(request.settings) if request.parallel.sharded else request.settings
    notes = []
    if settings.compute_dtype == "bf16" and not request.gpu.bf16:
        settings = settings.model_copy(update={"compute_dtype": "fp16"})
        notes.append(explain.no_bf16_note(request.gpu.label))
    settings = as_run(request.arch, settings, notes, strict=not request.search)
    return settings, notes


def price(request: PlanRequest) -> Priced:
    arch, parallel = request.arch, request.parallel
    profile = select_profile(request.gpu.label, request.profile)
    info = gpu_info(request.gpu, parallel.gpus, profile, request.margin, request.settings.expandable_segments)
    settings, recipe_notes = recipe(request)
    notes = [*request.notes, *recipe_notes, *explain.model_notes(arch)]
    notes += [note for note in (explain.ecc_note(request.gpu),) if note]
    estimator = estimator_for(arch, profile, parallel, request.margin)
    verify = _tracer(request, arch, profile, estimator, notes)
    budget = info.budget_bytes
    suggestion = None
    if request.search:
        search = Search(base=settings, fixed=request.fixed, max_positions=arch.max_positions,
                        target_batch=request.target_batch, max_rank=request.max_rank)
        found = search.candidates(estimator, budget)
        ranked = verified(found, verify, budget, request.prefer, request.top)
        open_knobs = not {"rank", "seq_len", "batch"} <= request.fixed
        chosen = (ranked[0].settings if ranked else smallest_settings(settings, request.fixed)) if open_knobs else settings
        plan = plan_from_estimate(arch, info, chosen, (verify([chosen])[0] if verify else estimator(chosen)), profile, parallel)
        plan.recommendations = ([r.model_copy(update={"strategy": parallel.strategy}) for r in ranked]
                                if parallel.gpus > 1 else ranked)
        if found:
            plan.longest_seq_len = max(found, key=lambda r: (r.settings.seq_len, r.tokens_per_step, r.settings.rank))
            plan.largest_batch = max(found, key=lambda r: (r.settings.batch, r.settings.seq_len, r.settings.rank))
        stuck = not plan.fits or not ranked
    else:
        chosen = settings
        plan = plan_from_estimate(arch, info, chosen, (verify([chosen])[0] if verify else estimator(chosen)), profile, parallel)
        if not plan.fits and request.mapped is not None:
            suggestion = _verified_change(smallest_change(_mapped(request.mapped, settings), estimator, budget),
                                          verify, budget, notes)
        stuck = not plan.fits and suggestion is None
    if not plan.fits:
        notes.insert(0, explain.why_not(arch, plan, searched=request.search))
    if stuck:
        plan.alternatives = alternatives(
            arch, settings, request.fixed, info,
            estimator_for=lambda model, gpus: estimator_for(model, profile, gpus, request.margin),
            budget_of=lambda card: gpu_info(card, 1, profile, request.margin).budget_bytes,
        )
    if parallel.gpus > 1:
        notes.append(explain.parallel_note(parallel))
    notes += [note for note in (explain.context_note(arch, chosen),
                                explain.expandable_note(estimator, chosen, plan.peak_bytes, profile)) if note]
    plan.notes = notes
    return Priced(plan, suggestion)


def _tracer(request: PlanRequest, arch: Architecture, profile: OverheadProfile, estimator: Estimator,
            notes: list[str]) -> ManyEstimator | None:
    """``request.verify``'s estimator with the plan's margin, remembering what it priced (the chosen plan is
    among the verified ones). The first trace that cannot run is one note, and from then on the analytic
    ``estimator`` answers. None: not asked, or several GPUs (the trace prices one GPU)."""
    if request.verify is None:
        return None
    if request.parallel.gpus > 1:
        notes.append("the trace prices one GPU: this multi-GPU plan is analytic")
        return None
    verify, seen = request.verify(arch, request.parallel, profile), {}

    def many(settings: list[TrainSettings]) -> list[Estimate]:
        nonlocal verify
        new = [s for s in dict.fromkeys(settings) if s not in seen]
        if new and verify is not None:
            try:
                seen.update((s, with_margin(est, profile, request.margin, s.expandable_segments))
                            for s, est in zip(new, verify(new)))
            except QPlanError as error:
                notes.append(f"trace unavailable ({error}): analytic plan")
                verify = None
        seen.update((s, estimator(s)) for s in new if s not in seen)
        return [seen[s] for s in settings]
    return many


def _verified_change(suggestion: Suggestion | None, verify: ManyEstimator | None, budget: int,
                     notes: list[str]) -> Suggestion | None:
    """The smallest change (searched with the analytic model) re-priced by trace: kept with the traced numbers
    when it fits, dropped with a note when it does not."""
    if suggestion is None or verify is None:
        return suggestion
    (est,) = verify([suggestion.settings])
    if est.required_bytes > budget:
        notes.append(f"the smallest change the analytic model finds does not fit when priced by {est.method}: "
                     f"it peaks at {fmt_gib(est.device_peak)}")
        return None
    return suggestion.model_copy(update={"peak_bytes": est.device_peak, "headroom_bytes": budget - est.required_bytes})


def _mapped(mapped: Mapped, settings: TrainSettings) -> Mapped:
    """The mapped config with the settings the recipe will run (its dtype fallback)."""
    return Mapped(settings=settings, fixed=mapped.fixed, paths=mapped.paths, written=mapped.written, notes=mapped.notes,
                  values=mapped.values)
