"""FSDP-QLoRA on N GPUs, per-GPU estimate [estimate: checked on one two-GPU run so far, see CAVEAT].

Answer.AI's fsdp_qlora / FSDP with ``bnb_4bit_quant_storage`` set to the compute dtype shards every
parameter (4-bit weights included) across the N ranks, gathers one decoder layer at a time for its forward
and backward (plus the next one prefetched), and shards gradients and optimizer state:

    per_gpu = each phase of the single-GPU estimate with frozen weights, trainable weights, gradients and
              optimizer state divided by N, plus 2 gathered decoder layers

for the FSDP-QLoRA recipe (:func:`fsdp_recipe`): FSDP flattens every wrapped unit into one tensor of one
dtype, so nothing is upcast to float32: no ``prepare_model_for_kbit_training`` and LoRA adapters in the
model dtype (peft ``autocast_adapter_dtype=False``; trl casts them the same way under FSDP).
"""

from __future__ import annotations

from dataclasses import replace

from ..architecture import Architecture
from ..settings import TrainSettings
from . import Estimate, estimate, exact_at_peak, exact_names
from .overhead import OverheadProfile
from .weights import frozen_weight_components


CAVEAT = ("per-GPU estimate, checked on one 2-GPU run only (Llama-2-7B on 2 x H200: -4.3% on device; NCCL held "
          "about 0.7 GiB per GPU outside torch, which this estimate leaves out)")


def fsdp_recipe(settings: TrainSettings) -> TrainSettings:
    """The settings FSDP-QLoRA trains with: everything stays in the 16-bit model dtype."""
    return settings.model_copy(update={"prepare_kbit": False, "adapter_fp32": False})


def fsdp_estimate(arch: Architecture, settings: TrainSettings, overhead: OverheadProfile, gpus: int) -> Estimate:
    if gpus <= 1:
        return estimate(arch, settings, overhead)
    settings = fsdp_recipe(settings)
    single = estimate(arch, settings, overhead)
    frozen = frozen_weight_components(arch, settings)
    sharded_names = exact_names(frozen, settings)  # every stored parameter, gradient and state is sharded
    layer_bytes = sum(size for name, size in frozen.items() if name not in ("embeddings", "lm_head", "embeddings + tied lm_head"))
    phases = {}
    for phase, parts in single.phases.items():
        parts = {name: (size // gpus if name in sharded_names else size) for name, size in parts.items()}
        if phase != "load":
            parts["gathered layers (FSDP all-gather, 2 in flight)"] = 2 * layer_bytes // arch.layers
        phases[phase] = parts
    totals = {phase: sum(parts.values()) for phase, parts in phases.items()}
    peak_phase = max(totals, key=totals.__getitem__)
    allocated = totals[peak_phase]
    reserved = overhead.reserved(allocated, single.recomputed_layer_bytes, single.fp32_logits_bytes)
    paged = single.paged // gpus
    return replace(
        single,
        phases=phases,
        peak_phase=peak_phase,
        allocated_peak=allocated,
        reserved_peak=reserved,
        device_peak=reserved + overhead.cuda_context_bytes + paged,
        paged=paged,
        exact_bytes=exact_at_peak(phases[peak_phase], sharded_names, paged),
        notes=[f"FSDP-QLoRA over {gpus} GPUs: {CAVEAT}"],
    )
