"""FSDP-QLoRA on N GPUs, per-GPU estimate [estimate: not yet measured on several GPUs].

Answer.AI's fsdp_qlora / FSDP with ``bnb_4bit_quant_storage`` set to the compute dtype shards every
parameter (4-bit weights included) across the N ranks, gathers one decoder layer at a time for its forward
and backward (plus the next one prefetched), and shards gradients and optimizer state:

    per_gpu = single-GPU peak - (1 - 1/N) * (frozen weights + trainable weights + optimizer state [+ grads])
              + 2 * one gathered decoder layer
"""

from __future__ import annotations

from dataclasses import replace

from ..architecture import Architecture
from ..settings import TrainSettings
from . import Estimate, estimate
from .overhead import OverheadProfile
from .weights import frozen_weight_components

SHARDED = ("LoRA adapters (fp32)", "optimizer state (GPU)")


def fsdp_estimate(arch: Architecture, settings: TrainSettings, overhead: OverheadProfile, gpus: int) -> Estimate:
    single = estimate(arch, settings, overhead)
    if gpus <= 1:
        return single
    frozen = frozen_weight_components(arch, settings)
    shardable = sum(frozen.values()) + sum(single.components.get(name, 0) for name in SHARDED)
    if single.peak_phase != "forward" or settings.grad_accum > 1:
        shardable += single.components.get("gradients", 0)
    gathered = 2 * (sum(frozen.values()) - single.components.get("embeddings", 0) - single.components.get("lm_head", 0)) // arch.layers
    allocated = single.allocated_peak - shardable + shardable // gpus + gathered
    reserved = overhead.reserved(allocated)
    components = {name: size for name, size in single.components.items()}
    for name in list(frozen) + list(SHARDED) + ["gradients", "optimizer state (paged, managed memory)"]:
        if name in components:
            components[name] //= gpus
    components["gathered layers (FSDP all-gather)"] = gathered
    components["allocator fragmentation"] = reserved - allocated
    paged = single.paged // gpus
    return replace(
        single,
        components=components,
        allocated_peak=allocated,
        reserved_peak=reserved,
        device_peak=reserved + overhead.cuda_context_bytes + paged,
        paged=paged,
        notes=[f"FSDP-QLoRA over {gpus} GPUs: per-GPU estimate, not yet measured on several GPUs"],
    )
