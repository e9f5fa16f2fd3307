"""The analytic QLoRA memory model: component formulas (one module each) assembled into phase peaks.

Each phase is a dict of the components alive at its peak, so a plan's breakdown adds up exactly:

    persistent = frozen weights + LoRA weights + optimizer state (torch-visible) + cuBLAS workspace
    load       = frozen weights + the bf16 copy alive while prepare_model_for_kbit_training casts the
                 largest matrix to fp32
    forward    = persistent [+ grads when accumulating] + autocast LoRA weight copies + saved activations
                 + the larger of: the loss (KV cache without checkpointing, final norm output, logits/CE
                 forward peak, autocast lm_head copy) and eager attention's softmax in the last layer
    backward   = the largest of
                 start:  persistent [+ grads] + copies (none with checkpointing) + activations + CE backward
                         peak + lm_head copy
                 layer:  persistent + grads + copies (one layer's with checkpointing) + checkpoints
                         + one of act.layer_backward_moments (recomputed activations, working set,
                         dequantized weight or eager scores)
    optimizer  = persistent + grads + optimizer step temporaries

    allocated_peak = the largest phase (what torch.cuda.max_memory_allocated shows)
    device_peak    = reserved(allocated_peak, recomputed layer, fp32 logits) + CUDA context
                     + paged optimizer state (nvidia-smi); see overhead.py

Peaks are for a steady-state step: optimizer state exists from the first step on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.inputs.architecture import Architecture
from planner.inputs.settings import TrainSettings
from planner.memory import activations as act
from planner.memory.logits import logits_memory
from planner.memory.optimizer import optimizer_memory
from planner.memory.overhead import OverheadProfile
from planner.memory.trainable import trainable_bytes_per_param, trainable_params, trainable_tensors
from planner.memory.weights import dequant_temp_bytes, float_bytes, frozen_weight_components

FRAGMENTATION = "allocator fragmentation"
CONTEXT = "CUDA context and other non-torch memory"
PAGED = "optimizer state (paged, managed memory)"
COMM = "NCCL buffers (outside torch)"


@dataclass
class Estimate:
    """Bytes by phase and component for one model + settings + overhead profile."""

    phases: dict[str, dict[str, int]]
    peak_phase: str
    allocated_peak: int
    reserved_peak: int
    device_peak: int
    paged: int
    trainable_params: int
    recomputed_layer_bytes: int = 0  # one layer's activations when checkpointing recomputes them
    expandable_segments: bool = False  # the allocator setting the reserved slack was computed for
    fp32_logits_bytes: int = 0  # 4*T*V
    exact_bytes: int = 0  # the part of device_peak that is stored tensors counted exactly (exact_names)
    margin_bytes: int = 0  # safety margin kept free beside this estimate (planning.estimator_for)
    comm_bytes: int = 0  # NCCL memory outside torch on each GPU of a multi-GPU run (memory.parallel)
    host_bytes: int = 0  # host memory the CPU-offloaded state needs, all ranks together (memory.parallel)
    notes: list[str] = field(default_factory=list)
    method: str = "analytic"  # "traced": the peaks come from planner.pricing.traced

    @property
    def uncertain_bytes(self) -> int:
        """What is estimated or measured rather than counted: activations, logits, working sets, allocator
        slack, CUDA context. The held-out errors live here, so the safety margin is a share of it."""
        return self.device_peak - self.exact_bytes

    @property
    def required_bytes(self) -> int:
        """Device memory this run needs to fit: its peak plus its safety margin."""
        return self.device_peak + self.margin_bytes

    @property
    def components(self) -> dict[str, int]:
        """What is on the device at the peak: the peak phase's tensors plus the non-tensor overheads.
        Adds up to ``device_peak``."""
        at_peak = dict(self.phases[self.peak_phase])
        at_peak[FRAGMENTATION] = self.reserved_peak - self.allocated_peak
        at_peak[CONTEXT] = self.device_peak - self.reserved_peak - self.paged - self.comm_bytes
        at_peak[COMM] = self.comm_bytes
        at_peak[PAGED] = self.paged
        return {name: size for name, size in at_peak.items() if size}

    def phase_totals(self) -> dict[str, int]:
        return {phase: sum(parts.values()) for phase, parts in self.phases.items()}


def trainable_name(settings: TrainSettings) -> str:
    if settings.full_finetune:
        return "trainable weights"
    return f"LoRA adapters ({'fp32' if trainable_bytes_per_param(settings) == 4 else '16-bit'})"


def exact_names(frozen: dict[str, int], settings: TrainSettings) -> set[str]:
    """Components that are byte counts of stored tensors, checked exactly against bitsandbytes, peft and torch
    (tests/test_storage.py, tests/test_lora_count.py, paged bytes on the GPU): the frozen weights
    (``frozen_weight_components``), adapters, their gradients, autocast copies and optimizer state."""
    return set(frozen) | {
        trainable_name(settings), "optimizer state (GPU)", "gradients", "gradients (accumulating)",
        "autocast copies of LoRA weights"}


def exact_at_peak(parts: dict[str, int], names: set[str], paged: int) -> int:
    return sum(size for name, size in parts.items() if name in names) + paged


def _settings_for_model(settings: TrainSettings) -> TrainSettings:
    # prepare_model_for_kbit_training is part of the k-bit recipe; a 16-bit LoRA run does not call it.
    if not settings.quantized and settings.prepare_kbit:
        return settings.model_copy(update={"prepare_kbit": False})
    return settings


@dataclass(frozen=True)
class AutocastCopies:
    forward: int
    loss_backward: int
    layer_backward: int


def autocast_copies(arch: Architecture, settings: TrainSettings, n_train: int, p_train: int) -> AutocastCopies:
    """bf16 copies of the fp32 LoRA weights, ``2 * n_train`` when all alive.

    autocast caches the cast of every fp32 leaf that requires grad until the outermost ``autocast`` exits
    (torch ``autocast_mode.cpp`` ``cached_casts``; ``torch.amp.autocast.__exit__`` calls
    ``clear_autocast_cache``), so the whole set is alive through the forward and loss. ``backward`` runs
    outside autocast: without checkpointing every copy is still saved by its ``mm``; with checkpointing none
    was saved, and the recompute of one layer (under its own autocast, torch ``utils/checkpoint.py``) makes
    and saves that layer's copies only: ``2 * n_train / L`` (every LoRA tensor sits in a decoder layer)."""
    total = 2 * n_train if settings.autocast and p_train == 4 else 0
    if not settings.gradient_checkpointing or settings.full_finetune:
        return AutocastCopies(total, total, total)
    return AutocastCopies(total, 0, total // arch.layers)


def _largest(*moments: dict[str, int]) -> dict[str, int]:
    return max(moments, key=lambda parts: sum(parts.values()))


def estimate(arch: Architecture, settings: TrainSettings, overhead: OverheadProfile) -> Estimate:
    settings = _settings_for_model(settings)
    frozen = frozen_weight_components(arch, settings)
    tensors = trainable_tensors(arch, settings)
    n_train = trainable_params(arch, settings)
    p_train = trainable_bytes_per_param(settings)
    optim = optimizer_memory(settings.optim, tensors, p_train)
    logits = logits_memory(arch, settings)
    grads = p_train * n_train

    persistent = dict(frozen)
    persistent[trainable_name(settings)] = p_train * n_train
    persistent["optimizer state (GPU)"] = optim.device
    persistent["cuBLAS workspace"] = overhead.cublas_workspace_bytes

    checkpointing = settings.gradient_checkpointing
    layers_kept = act.checkpoint_saved(arch, settings) if checkpointing else arch.layers * act.layer_saved(arch, settings)
    layers_kept += act.shared_inputs(arch, settings)  # what the layers keep, before and after the final norm
    kept = layers_kept + act.final_norm_saved(arch, settings)
    recomputed = act.recomputed_layer(arch, settings)
    copies = autocast_copies(arch, settings, n_train, p_train)
    in_flight = {
        "gradients (accumulating)": grads if settings.grad_accum > 1 else 0,
        "autocast copies of LoRA weights": copies.forward,
        "activations kept for backward": kept,
        "lm_head autocast bf16 copy": logits.lm_head_cast,
    }
    logits_end = {
        **persistent, **in_flight,
        "KV cache (use_cache, no checkpointing)": act.kv_cache(arch, settings),
        act.FINAL_NORM_OUTPUT: act.final_norm_output(arch, settings),
        "logits + cross-entropy forward": logits.forward_peak,
    }
    eager_attention = {  # the last layer's softmax, before the final norm and logits exist
        **persistent, "gradients (accumulating)": in_flight["gradients (accumulating)"],
        "autocast copies of LoRA weights": copies.forward,
        "activations kept for backward": layers_kept,
        act.EAGER: act.eager_forward(arch, settings),
    }
    loss_backward = {**persistent, **in_flight, "autocast copies of LoRA weights": copies.loss_backward,
                     "logits + cross-entropy backward": logits.backward_peak}
    layer_backward = [
        {**persistent, "gradients": grads, "autocast copies of LoRA weights": copies.layer_backward,
         "activations kept for backward": layers_kept, **moment}
        for moment in act.layer_backward_moments(arch, settings, recomputed, dequant_temp_bytes(arch, settings)).values()
    ]
    phases = {
        "load": {**frozen, "bf16 copy during fp32 cast": 2 * arch.embedding_numel if float_bytes(settings) == 4 else 0},
        "forward": _largest(logits_end, eager_attention),
        "backward": _largest(loss_backward, *layer_backward),
        "optimizer": {**persistent, "gradients": grads, "optimizer step temporaries": optim.step_temp},
    }
    phases = {name: {k: v for k, v in parts.items() if v} for name, parts in phases.items()}
    totals = {name: sum(parts.values()) for name, parts in phases.items()}
    peak_phase = max(totals, key=totals.__getitem__)
    allocated = totals[peak_phase]
    reserved = overhead.reserved(allocated, recomputed, logits.fp32_bytes, settings.expandable_segments)
    return Estimate(
        phases=phases,
        peak_phase=peak_phase,
        allocated_peak=allocated,
        reserved_peak=reserved,
        device_peak=reserved + overhead.cuda_context_bytes + optim.paged_resident,
        paged=optim.paged_resident,
        trainable_params=n_train,
        recomputed_layer_bytes=recomputed,
        expandable_segments=settings.expandable_segments,
        fp32_logits_bytes=logits.fp32_bytes,
        exact_bytes=exact_at_peak(phases[peak_phase], exact_names(frozen, settings), optim.paged_resident),
    )
