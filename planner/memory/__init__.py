"""The analytic QLoRA memory model: component formulas (one module each) assembled into phase peaks.

    persistent = frozen weights + trainable weights + optimizer state (torch-visible) + cuBLAS workspace
    forward    = persistent [+ grads when accumulating] + autocast LoRA weight copies + saved activations
                 + logits/CE forward peak + autocast lm_head copy
    backward   = max( persistent + acts + CE backward peak,                      (start of backward)
                      persistent + grads + checkpoints + one recomputed layer
                      + backward working set + dequantized weight )               (worst decoder layer)
    optimizer  = persistent + grads + optimizer step temporaries
    allocated_peak = max over phases (what torch.cuda.max_memory_allocated shows)
    device_peak    = reserved(allocated_peak) + CUDA context + paged optimizer state (what nvidia-smi shows)

Peaks are over a steady-state step (optimizer state exists from the first step on).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..architecture import Architecture
from ..settings import TrainSettings
from . import activations as act
from .logits import logits_memory
from .optimizer import optimizer_memory
from .overhead import OverheadProfile
from .trainable import trainable_bytes_per_param, trainable_params, trainable_tensors
from .weights import dequant_temp_bytes, frozen_weight_components


@dataclass
class Estimate:
    """Bytes by component and by phase for one model + settings + overhead profile."""

    components: dict[str, int]
    phases: dict[str, int]
    peak_phase: str
    allocated_peak: int
    reserved_peak: int
    device_peak: int
    paged: int
    trainable_params: int
    notes: list[str] = field(default_factory=list)


def _settings_for_model(settings: TrainSettings) -> TrainSettings:
    # prepare_model_for_kbit_training is part of the k-bit recipe; a 16-bit LoRA run does not call it.
    if not settings.quantized and settings.prepare_kbit:
        return settings.model_copy(update={"prepare_kbit": False})
    return settings


def estimate(arch: Architecture, settings: TrainSettings, overhead: OverheadProfile) -> Estimate:
    settings = _settings_for_model(settings)
    frozen = frozen_weight_components(arch, settings)
    tensors = trainable_tensors(arch, settings)
    n_train = trainable_params(arch, settings)
    p_train = trainable_bytes_per_param(settings)
    weights_train = p_train * n_train
    grads = p_train * n_train
    optim = optimizer_memory(settings.optim, tensors, p_train)
    logits = logits_memory(arch, settings)

    saved_layer = act.layer_saved(arch, settings)
    if settings.gradient_checkpointing:
        acts = act.checkpoint_saved(arch, settings) + act.outside_layers(arch, settings)
        recompute = saved_layer
    else:
        acts = arch.layers * saved_layer + act.outside_layers(arch, settings)
        recompute = 0
    autocast_copies = 2 * n_train if settings.autocast and p_train == 4 else 0
    working = int(overhead.backward_scale * act.backward_working_set(arch, settings))
    dequant = dequant_temp_bytes(arch, settings)

    persistent = sum(frozen.values()) + weights_train + optim.device + overhead.cublas_workspace_bytes
    accumulated = grads if settings.grad_accum > 1 else 0
    forward = persistent + accumulated + autocast_copies + acts + logits.forward_peak + logits.lm_head_cast
    backward = max(
        persistent + accumulated + autocast_copies + acts + logits.backward_peak + logits.lm_head_cast,
        persistent + grads + autocast_copies + acts + recompute + working + dequant + act.eager_transient(arch, settings),
    )
    optimizer = persistent + grads + optim.step_temp
    phases = {"forward": forward, "backward": backward, "optimizer": optimizer}
    peak_phase = max(phases, key=phases.__getitem__)
    allocated = phases[peak_phase]
    reserved = overhead.reserved(allocated)

    components = dict(frozen)
    components.update({
        "LoRA adapters (fp32)" if not settings.full_finetune else "trainable weights": 0,  # counted in frozen for full FT
        "gradients": grads,
        "optimizer state (GPU)": optim.device,
        "optimizer state (paged, managed memory)": optim.paged,
        "optimizer step temporaries": optim.step_temp,
        "activations kept for backward": acts,
        "recomputed layer + backward working set": recompute + working,
        "dequantized weight (transient)": dequant,
        "logits + cross-entropy (peak)": max(logits.forward_peak, logits.backward_peak),
        "lm_head autocast copy": logits.lm_head_cast + autocast_copies,
        "cuBLAS workspace": overhead.cublas_workspace_bytes,
        "allocator fragmentation": reserved - allocated,
        "CUDA context": overhead.cuda_context_bytes,
    })
    if not settings.full_finetune:
        components["LoRA adapters (fp32)"] = weights_train
    return Estimate(
        components={name: size for name, size in components.items() if size},
        phases=phases,
        peak_phase=peak_phase,
        allocated_peak=allocated,
        reserved_peak=reserved,
        device_peak=reserved + overhead.cuda_context_bytes + optim.paged,
        paged=optim.paged,
        trainable_params=n_train,
    )
