"""The words a plan carries: why it does not fit, and the caveats of its recipe, card and GPU count."""

from __future__ import annotations

from planner.inputs.architecture import Architecture
from planner.inputs.gpus import Gpu
from planner.inputs.settings import EXPANDABLE, Parallel, TrainSettings
from planner.inputs.units import MiB, fmt_gib
from planner.memory.overhead import OverheadProfile
from planner.memory.parallel import STATUS
from planner.memory.weights import frozen_weight_components
from planner.output.plan import Plan
from planner.search.recommend import Estimator

FROZEN = "the frozen base model (4-bit weights plus the modules left in 16/32-bit)"


def frozen_per_gpu(arch: Architecture, plan: Plan) -> int:
    """The frozen base model's bytes on each GPU of the plan: whole on one GPU or under DDP, none when
    offloaded, else 1/N (sharded, or split by layers)."""
    frozen = sum(frozen_weight_components(arch, plan.settings).values())
    if plan.parallel and plan.parallel.strategy != "ddp":
        frozen = 0 if plan.parallel.cpu_offload else frozen // plan.parallel.gpus
    return frozen


def why_not(arch: Architecture, plan: Plan, searched: bool) -> str:
    """Why the plan does not fit: the frozen model alone, or its peak and largest parts against the budget.
    ``searched``: the plan shows the smallest setup the open knobs allow, not the run as configured."""
    info = plan.gpu
    budget = f"{fmt_gib(info.budget_bytes)} this card has {_budget_words(info.budget_bytes, info.usable_bytes)}"
    frozen = frozen_per_gpu(arch, plan)
    if frozen > info.budget_bytes:
        return f"{FROZEN} alone needs {fmt_gib(frozen)}, more than the {budget}, so no setting of this run fits here"
    largest = sorted(plan.breakdown.items(), key=lambda item: -item[1])[:3]
    parts = ", ".join(f"{name} {fmt_gib(size)}" for name, size in largest)
    which = "even the smallest setup shown" if searched else "the run as configured"
    return (f"{which} peaks at {fmt_gib(plan.peak_bytes)} ({plan.peak_phase}); with its {fmt_gib(plan.margin_bytes)} "
            f"safety margin that is {fmt_gib(-plan.headroom_bytes)} over the {budget}; largest parts: {parts}")


def _budget_words(budget: int, usable: int) -> str:
    return "usable" if budget == usable else f"usable after the margin ({fmt_gib(usable)} before it)"


def model_notes(arch: Architecture) -> list[str]:
    if not arch.expert_banks:
        return []
    return ["MoE experts are 3-D parameters in transformers 5: bitsandbytes leaves them unquantized (16-bit, fp32 "
            "after prepare_model_for_kbit_training); all-linear LoRA also adapts them (peft target_parameters); "
            "their activations are an estimate"]


def context_note(arch: Architecture, settings: TrainSettings) -> str | None:
    """A seq_len past the model's context: priced as asked, but the model was not trained for it."""
    if settings.seq_len <= arch.max_positions:
        return None
    return (f"seq_len {settings.seq_len} is beyond the model's max_position_embeddings ({arch.max_positions}): "
            "priced as asked, but positions past it need RoPE scaling or give poor results")


def no_bf16_note(label: str) -> str:
    return f"{label} has no bf16: compute dtype falls back to fp16 (same bytes; the Trainer refuses bf16=True there)"


def ecc_note(gpu: Gpu) -> str | None:
    """Which ECC figure a card whose nvidia-smi total depends on ECC mode was planned with, and the other one;
    nothing when the mode was given as on, or the card has one figure."""
    if gpu.ecc is None or gpu.ecc_other_bytes is None or (gpu.ecc == "on" and not gpu.ecc_assumed):
        return None
    planned, other = gpu.total_bytes // MiB, gpu.ecc_other_bytes // MiB
    if gpu.ecc == "off":
        return f"{gpu.label}: planned with ECC off ({planned} MiB); with ECC on nvidia-smi prints {other} MiB"
    return (f"{gpu.label}: assumed ECC on ({planned} MiB, the smaller figure); with ECC off nvidia-smi prints "
            f"{other} MiB: plan for that with --ecc off (nvidia-smi -q shows the ECC mode)")


def parallel_note(parallel: Parallel) -> str:
    """What a multi-GPU plan is and how sure it is."""
    recipe = (" trains the FSDP-QLoRA recipe (4-bit storage in the compute dtype, 16-bit adapters, no "
              "prepare_model_for_kbit_training); " if parallel.sharded else " ")
    return f"{parallel.label}: per-GPU plan;{recipe}{STATUS[parallel.strategy]}"


def expandable_note(estimator: Estimator, settings: TrainSettings, peak: int, profile: OverheadProfile) -> str | None:
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
