"""Several GPUs: the per-GPU estimate of each strategy, from the single-GPU phases.

fsdp: FSDP-QLoRA (Answer.AI fsdp_qlora; peft ``fsdp_auto_wrap_policy``, ``FULL_SHARD``) [measured, 2 x H200]
    Trains the FSDP recipe (:func:`fsdp_recipe`): loaded in the compute dtype with ``bnb_4bit_quant_storage``
    set to it, no ``prepare_model_for_kbit_training``, LoRA in that dtype (FSDP flattens each unit into one
    tensor of one dtype). Per GPU, in every phase:

        every stored parameter, gradient and optimizer state / N        (``FlatParameter`` shards)
      + the 4-bit quant_state, whole      (module attributes, not parameters: never sharded)
      + 2 gathered decoder layers         (the running unit and the prefetched one, ``limit_all_gathers``)
      + the root unit (embeddings, lm_head, final norm) gathered from forward through backward
                                          (``_runtime_utils.py``: ``free_unsharded_flat_param = not state._is_root``)
      + activations, logits and working sets as on one GPU
      + NCCL buffers outside torch        (:data:`NCCL_BYTES`, measured)

    ``cpu_offload`` (``CPUOffload(offload_params=True)``, Answer.AI's ``--use_cpu_offload``): the shards, their
    gradients and the optimizer step live in host memory instead, and the allocator holds more cache
    (:data:`OFFLOAD_CACHE_BYTES`, measured). Host memory: the offloaded state of all ranks plus the quantized
    model rank 0 stages while FSDP wraps it (low-memory loading); the processes themselves come on top.
zero3: DeepSpeed ZeRO-3 with ``zero3_init_flag`` [estimate, not measured: no DeepSpeed on the device machine]
    As fsdp, with DeepSpeed's mixed-precision model states (Rajbhandari et al. 2020, ZeRO, section 3: 16-bit
    parameters and gradients plus an fp32 master copy with the optimizer's states on it, all / N) and the
    buffers transformers' ``deepspeed.py`` fills in for ``"auto"``: ``reduce_bucket_size = h*h`` and
    ``stage3_prefetch_bucket_size = 0.9*h*h`` elements of 16-bit. Gathered: one layer plus the prefetch
    bucket (at most another layer). Parameters under ``stage3_param_persistence_threshold = 10*h`` elements
    stay whole; counted as sharded here (about 1% of the adapters). ``cpu_offload``: ``offload_param`` and
    ``offload_optimizer`` to the CPU.
ddp: DistributedDataParallel, one full copy per GPU [estimate]
    The single-GPU estimate plus DDP's gradient buckets, a second copy of every gradient
    (``gradient_as_bucket_view=False``, torch's and accelerate's default; torch ``distributed.py`` docs:
    the saving of bucket views "will be equal to the total gradients size"), plus NCCL. Never less memory
    per GPU than one GPU: it buys speed, not room.
device-map: ``device_map="auto"``, one process, layers split across the GPUs [estimate]
    Contiguous ``ceil(L/N)`` decoder layers per GPU; the first GPU also holds the embeddings, the last the
    final norm, lm_head and logits. Per GPU: its layers' share of weights, adapters, gradients, optimizer
    state and saved activations, the whole one-layer transients, a CUDA context each. The worst GPU is
    reported. Only one GPU computes at a time. accelerate's ``get_balanced_memory`` balances by weight bytes,
    so the real split may differ by a layer.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil

from planner.inputs.architecture import Architecture
from planner.inputs.settings import Parallel, TrainSettings
from planner.memory.estimate import Estimate, estimate, exact_at_peak, exact_names
from planner.memory import activations as act
from planner.memory.optimizer import optimizer_memory
from planner.memory.overhead import OverheadProfile
from planner.memory.trainable import trainable_params, trainable_tensors
from planner.memory.weights import frozen_weight_components, quant_state_bytes
from planner.profiles import load_profile_json

STATUS = {"fsdp": "measured on 2 x H200, profiles/measurements/fsdp-x2-h200.jsonl",
          "zero3": "estimate from the ZeRO paper and DeepSpeed's buffers, not measured",
          "ddp": "estimate, not measured", "device-map": "estimate, not measured"}

# Measured terms, with their GPU, versions, date and rule: profiles/parallel.json.
_MEASURED = load_profile_json("parallel.json")
NCCL_BYTES: int = _MEASURED["nccl_bytes"]
OFFLOAD_CACHE_BYTES: int = _MEASURED["offload_cache_bytes"]

QUANT_STATE = "4-bit quant_state (whole on every GPU)"
GATHERED = "gathered layers (all-gather in flight)"
ROOT = "root unit gathered (embeddings, lm_head: kept through backward)"
REDUCE_BUCKET = "ZeRO-3 reduce bucket"
MASTER = "fp32 master copy of the adapters (ZeRO)"
DDP_BUCKETS = "DDP gradient buckets (a copy of the gradients)"
STEP_TEMP = "optimizer step temporaries"
OUTSIDE_LAYERS = ("embeddings", "lm_head", "embeddings + tied lm_head")
LAST_GPU = ("lm_head", "lm_head autocast bf16 copy", "logits + cross-entropy forward", "logits + cross-entropy backward",
            act.FINAL_NORM_OUTPUT)
FIRST_GPU = ("embeddings", "embeddings + tied lm_head", "bf16 copy during fp32 cast")
WHOLE_ON_EACH = ("cuBLAS workspace", act.RECOMPUTED, act.WORKING, act.DEQUANT, act.EAGER)


def fsdp_recipe(settings: TrainSettings) -> TrainSettings:
    """The settings FSDP-QLoRA (and ZeRO-3 QLoRA) trains with: everything stays in the 16-bit model dtype."""
    return settings.model_copy(update={"prepare_kbit": False, "adapter_fp32": False})


def parallel_estimate(arch: Architecture, settings: TrainSettings, overhead: OverheadProfile, parallel: Parallel) -> Estimate:
    """Per-GPU estimate of ``parallel.strategy`` over ``parallel.gpus`` GPUs (the single-GPU one for one GPU)."""
    if parallel.gpus == 1:
        return estimate(arch, settings, overhead)
    if parallel.strategy == "ddp":
        return _ddp(arch, settings, overhead)
    if parallel.strategy == "device-map":
        return _device_map(arch, settings, overhead, parallel.gpus)
    return _sharded(arch, settings, overhead, parallel.gpus, parallel.strategy, parallel.cpu_offload)


def _sharded(arch, settings, overhead, gpus, strategy, cpu_offload) -> Estimate:
    settings = fsdp_recipe(settings)
    arch = replace(arch, dtype=settings.compute_dtype_name)  # loaded in the storage dtype
    single = estimate(arch, settings, overhead)
    frozen = frozen_weight_components(arch, settings)
    exact = exact_names(frozen, settings) | {MASTER}
    quant_name, whole = next(iter(frozen), QUANT_STATE), quant_state_bytes(arch, settings)  # none: a full fine-tune
    outside = sum(size for name, size in frozen.items() if name in OUTSIDE_LAYERS)
    layer = (sum(frozen.values()) - outside - whole) // arch.layers
    if strategy == "fsdp":
        live = {GATHERED: 2 * layer}
    else:
        live = {GATHERED: layer + min(layer, 2 * int(0.9 * arch.hidden ** 2)), REDUCE_BUCKET: 2 * arch.hidden ** 2}
    states, paged = _zero3_states(arch, settings) if strategy == "zero3" else ({}, single.paged)
    phases, shards_peak = {}, 0
    for phase, parts in single.phases.items():
        parts = dict(parts)
        if whole:
            parts[quant_name] -= whole
        if phase != "load":
            parts.update({name: size for name, size in states.items() if name in parts or name == MASTER})
        shards = {name: size // gpus for name, size in parts.items() if name in exact or name == STEP_TEMP}
        shards_peak = max(shards_peak, sum(shards.values()))
        out = {name: size for name, size in parts.items() if name not in shards}
        out.update({} if cpu_offload else shards)
        out[QUANT_STATE] = whole
        if phase in ("forward", "backward"):
            out.update(live)
            if strategy == "fsdp":
                out[ROOT] = outside - outside // gpus
        phases[phase] = {name: size for name, size in out.items() if size}
    paged = 0 if cpu_offload else paged // gpus
    est = _finish(single, phases, overhead, exact | {QUANT_STATE}, paged, NCCL_BYTES,
                  extra_reserved=OFFLOAD_CACHE_BYTES if cpu_offload else 0)
    if cpu_offload:
        est.host_bytes = sum(frozen.values()) + gpus * (shards_peak + paged)
    return est


def _zero3_states(arch, settings) -> tuple[dict[str, int], int]:
    """ZeRO's mixed-precision model states, whole (sharded by the caller): an fp32 master copy of the adapters
    and the optimizer's states and step temporaries kept on that fp32 copy; with the paged bytes."""
    optim = optimizer_memory(settings.optim, trainable_tensors(arch, settings), 4)
    states = {MASTER: 4 * trainable_params(arch, settings), "optimizer state (GPU)": optim.device, STEP_TEMP: optim.step_temp}
    return states, optim.paged


def _ddp(arch, settings, overhead) -> Estimate:
    single = estimate(arch, settings, overhead)
    grads = single.phases["optimizer"].get("gradients", 0)
    phases = {phase: {**parts, DDP_BUCKETS: grads} if phase != "load" else dict(parts)
              for phase, parts in single.phases.items()}
    return _finish(single, phases, overhead, _exact(arch, settings) | {DDP_BUCKETS}, single.paged, NCCL_BYTES)


def _device_map(arch, settings, overhead, gpus) -> Estimate:
    """The worse of the first GPU (embeddings) and the last (lm_head, logits), each with ``ceil(L/N)`` layers."""
    single = estimate(arch, settings, overhead)
    share = ceil(arch.layers / gpus) / arch.layers
    exact = _exact(arch, settings)
    worst = None
    for role, own in (("first", FIRST_GPU), ("last", LAST_GPU)):
        others = LAST_GPU if role == "first" else FIRST_GPU
        phases = {
            phase: {name: (size if name in own or name in WHOLE_ON_EACH else int(size * share))
                    for name, size in parts.items() if name not in others}
            for phase, parts in single.phases.items()
        }
        fp32_logits = single.fp32_logits_bytes if role == "last" else 0
        est = _finish(replace(single, fp32_logits_bytes=fp32_logits), phases, overhead, exact, int(single.paged * share), 0)
        if worst is None or est.device_peak > worst.device_peak:
            worst = est
    return worst


def _exact(arch, settings) -> set[str]:
    return exact_names(frozen_weight_components(arch, settings), settings)


def _finish(single: Estimate, phases: dict[str, dict[str, int]], overhead: OverheadProfile, exact: set[str],
            paged: int, comm: int, extra_reserved: int = 0) -> Estimate:
    totals = {phase: sum(parts.values()) for phase, parts in phases.items()}
    peak_phase = max(totals, key=totals.__getitem__)
    allocated = totals[peak_phase]
    reserved = overhead.reserved(allocated, single.recomputed_layer_bytes, single.fp32_logits_bytes,
                                 single.expandable_segments) + extra_reserved
    return replace(
        single, phases=phases, peak_phase=peak_phase, allocated_peak=allocated, reserved_peak=reserved,
        device_peak=reserved + overhead.cuda_context_bytes + comm + paged, paged=paged, comm_bytes=comm,
        exact_bytes=exact_at_peak(phases[peak_phase], exact, paged), notes=list(single.notes),
    )
