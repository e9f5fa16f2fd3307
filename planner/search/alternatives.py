"""When nothing fits this card, what would, with numbers, cheapest first: the same card without
``prepare_model_for_kbit_training`` (a free change: embeddings, lm_head and norms stay 16-bit), then one larger
catalogue card, the fewest cards of this kind with FSDP-QLoRA (CPU offload only when no count without it fits),
a smaller model of the same family. The hardware and model alternatives are judged on
:func:`reference_settings`, a small but useful setup; the free change on the open knobs' search."""

from __future__ import annotations

from typing import Callable

from planner.inputs.architecture import Architecture
from planner.inputs.catalog import catalog_models
from planner.inputs.gpus import Gpu, catalog_gpus
from planner.inputs.settings import Parallel, TrainSettings
from planner.inputs.units import fmt_gib
from planner.memory.estimate import Estimate
from planner.memory.parallel import fsdp_recipe
from planner.output.launch import launch_hint
from planner.output.plan import Alternative, GpuInfo
from planner.search.recommend import Estimator, Search, best

MAX_FSDP_GPUS = 16
EstimatorFor = Callable[[Architecture, Parallel], Estimator]  # (model, GPUs) -> settings -> Estimate with margin


def reference_settings(settings: TrainSettings, fixed: set[str], arch: Architecture) -> TrainSettings:
    """The user's fixed knobs, otherwise r=16, seq_len 1024 (or the model's maximum), micro-batch 1,
    checkpointing, paged 8-bit AdamW."""
    defaults = {
        "rank": 16, "seq_len": min(1024, arch.max_positions), "batch": 1,
        "gradient_checkpointing": True, "optim": "paged_adamw_8bit",
    }
    return settings.model_copy(update={k: v for k, v in defaults.items() if k not in fixed})


def smallest_settings(settings: TrainSettings, fixed: set[str]) -> TrainSettings:
    """The least memory the open knobs allow: r=8, seq_len 256, micro-batch 1, checkpointing, 8-bit state."""
    smallest = {"rank": 8, "seq_len": 256, "batch": 1, "gradient_checkpointing": True, "optim": "paged_adamw_8bit"}
    return settings.model_copy(update={k: v for k, v in smallest.items() if k not in fixed})


def alternatives(arch: Architecture, settings: TrainSettings, fixed: set[str], info: GpuInfo,
                 estimator_for: EstimatorFor, budget_of: Callable[[Gpu], int]) -> list[Alternative]:
    reference = reference_settings(settings, fixed, arch)
    need = estimator_for(arch, Parallel())(reference)
    out: list[Alternative] = [alt for alt in (without_prepare(arch, settings, fixed, info, estimator_for),) if alt]
    what = "full fine-tune" if reference.full_finetune else f"r={reference.rank}"
    ref_text = f"{what}, seq_len {reference.seq_len}, micro-batch {reference.batch}"
    for card in catalog_gpus():
        if need.required_bytes <= budget_of(card):
            out.append(Alternative(
                kind="larger-gpu",
                summary=f"one {card.label} ({fmt_gib(card.total_bytes)}): {ref_text} peaks at {fmt_gib(need.device_peak)}",
                peak_bytes=need.device_peak, detail={"gpu": card.name, "settings": reference.model_dump()},
            ))
            break
    more = None if reference.full_finetune else fewest_gpus(arch, reference, info.budget_bytes, estimator_for)  # QLoRA's
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
    smaller = largest_fitting_sibling(arch, reference, info.budget_bytes, estimator_for)
    if smaller:
        out.append(smaller)
    return out


def without_prepare(arch: Architecture, settings: TrainSettings, fixed: set[str], info: GpuInfo,
                    estimator_for: EstimatorFor) -> Alternative | None:
    """The best fitting plan of the open knobs when ``prepare_model_for_kbit_training`` is not called, where the
    user did not fix it: it upcasts embeddings, lm_head and norms to float32 (gigabytes with a large vocabulary)."""
    if "prepare_kbit" in fixed or not (settings.prepare_kbit and settings.quantized) or info.count > 1:
        return None
    base = settings.model_copy(update={"prepare_kbit": False})
    found = Search(base=base, fixed=fixed, max_positions=arch.max_positions).candidates(
        estimator_for(arch, Parallel()), info.budget_bytes)
    if not found:
        return None
    top = best(found, top=1)[0]
    s = top.settings
    return Alternative(
        kind="no-prepare-kbit",
        summary=(f"this card without prepare_model_for_kbit_training (embeddings, lm_head and norms stay 16-bit; "
                 f"--no-prepare-kbit): r={s.rank}, seq_len {s.seq_len}, micro-batch {s.batch} peaks at "
                 f"{fmt_gib(top.peak_bytes)}"),
        peak_bytes=top.peak_bytes, detail={"settings": s.model_dump()},
    )


def fewest_gpus(arch: Architecture, reference: TrainSettings, budget: int,
                estimator_for: EstimatorFor) -> tuple[Parallel, Estimate] | None:
    """The fewest cards of this kind that train ``reference`` with FSDP-QLoRA; with CPU offload only when no
    count up to :data:`MAX_FSDP_GPUS` fits without it (offload is slower: every step streams the weights)."""
    for offload in (False, True):
        for n in range(2, MAX_FSDP_GPUS + 1):
            parallel = Parallel(gpus=n, strategy="fsdp", cpu_offload=offload)
            per_gpu = estimator_for(arch, parallel)(reference)
            if per_gpu.required_bytes <= budget:
                return parallel, per_gpu
    return None


def largest_fitting_sibling(arch: Architecture, reference: TrainSettings, budget: int,
                            estimator_for: EstimatorFor) -> Alternative | None:
    entries = catalog_models()
    family = next((e.family for e in entries if e.architecture.name == arch.name), None)
    siblings = sorted(
        (e for e in entries if e.family == family and e.params < arch.total_params),
        key=lambda e: e.params, reverse=True,
    ) if family else []
    for entry in siblings:
        est = estimator_for(entry.architecture, Parallel())(reference)
        if est.required_bytes <= budget:
            return Alternative(
                kind="smaller-model",
                summary=(f"{entry.slug} ({entry.params / 1e9:.1f} B params) fits this card: "
                         f"{'full fine-tune' if reference.full_finetune else f'r={reference.rank}'}, seq_len "
                         f"{reference.seq_len} peaks at {fmt_gib(est.device_peak)}"),
                peak_bytes=est.device_peak, detail={"model": entry.slug},
            )
    return None
