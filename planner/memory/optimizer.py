"""Optimizer state, and what of it lives outside the torch allocator.

Sources:
- bitsandbytes 0.50.2 ``optim/optimizer.py:Optimizer2State.init_state``: 32-bit AdamW keeps two float32
  states (8 B/param). 8-bit AdamW keeps two uint8 states plus float32 absmax per 256-element block
  (``2 + 8/256`` B/param) for tensors of at least ``min_8bit_size`` = 4096 elements, float32 states below.
  Paged variants allocate states of tensors with ``numel >= 1e5`` (``page_threshold``) in CUDA managed memory
  (``functional.py:get_paged`` -> ``cudaMallocManaged``): invisible to ``torch.cuda.memory_stats``, visible to
  NVML while resident. absmax is never paged. The update kernels work in place.
- Resident paged state, measured (profiles/measurements/paged-residency-h200.json, ``planner.measure.paged``):
  CUDA managed memory lands on the GPU in 2 MiB blocks, and an allocation smaller than a block does not
  straddle two, so it takes ``2 MiB / floor(2 MiB / size)``; larger ones take their size. Llama-2-13B's r=64
  states (1.25 MiB tensors) take 2.51 GiB for 1.87 GiB of tensors; 7B/8B ones (1 MiB) pack exactly.
- torch 2.x ``optim/adamw.py``: ``exp_avg`` and ``exp_avg_sq`` in the parameter dtype; the default foreach
  implementation (the Trainer's ``adamw_torch`` sets neither fused nor foreach) makes one temporary list the
  size of ``exp_avg_sq`` during ``step()``.
- transformers ``optimization.py:Adafactor`` (Trainer: ``scale_parameter=False, relative_step=False``, no
  beta1): a float32 row and column vector per 2-D tensor; ``step()`` builds full float32 ``grad**2`` and
  update tensors for one parameter at a time.
- ``torch.optim.SGD`` with the Trainer's momentum 0: no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from planner.memory.trainable import Tensor

MIN_8BIT_SIZE = 4096
PAGE_THRESHOLD = 100_000
BLOCKSIZE_8BIT_STATE = 256


@dataclass(frozen=True)
class OptimizerMemory:
    device: int  # states the torch allocator holds
    paged: int  # states in CUDA managed memory (bitsandbytes paged optimizers): their tensors' bytes
    step_temp: int  # transient during optimizer.step()
    paged_resident: int = 0  # the device memory the paged states take once resident (:func:`managed_resident`)


def _bnb_adam_state(optim: str, numel: int) -> tuple[int, int]:
    """(state bytes, absmax bytes) of one tensor under a bitsandbytes AdamW."""
    if optim.endswith("8bit") and numel >= MIN_8BIT_SIZE:
        return 2 * numel, 2 * 4 * ceil(numel / BLOCKSIZE_8BIT_STATE)
    return 8 * numel, 0


def optimizer_memory(optim: str, tensors: list[Tensor], param_bytes: int) -> OptimizerMemory:
    """State bytes for trainable tensors ``(rows, cols, how many)`` whose dtype has ``param_bytes`` bytes."""
    if optim == "sgd":
        return OptimizerMemory(0, 0, 0)
    if optim == "adamw_torch":
        numel = sum(rows * cols * copies for rows, cols, copies in tensors)
        return OptimizerMemory(device=2 * param_bytes * numel, paged=0, step_temp=param_bytes * numel)
    if optim == "adafactor":
        factored = sum(4 * (rows + cols if rows > 1 else cols) * copies for rows, cols, copies in tensors)
        largest = max((rows * cols for rows, cols, _ in tensors), default=0)
        return OptimizerMemory(device=factored, paged=0, step_temp=2 * 4 * largest)
    device = paged = resident = 0
    for rows, cols, copies in tensors:
        numel = rows * cols
        state, absmax = _bnb_adam_state(optim, numel)
        if optim.startswith("paged_") and numel >= PAGE_THRESHOLD:
            paged += copies * state
            resident += copies * 2 * managed_resident(state // 2)  # two state tensors
            device += copies * absmax
        else:
            device += copies * (state + absmax)
    return OptimizerMemory(device=device, paged=paged, paged_resident=resident, step_temp=0)


MANAGED_BLOCK = 2 * 2**20


def managed_resident(nbytes: int) -> int:
    """Device memory one managed allocation of ``nbytes`` takes once resident: a share of a 2 MiB block
    (``2 MiB / floor(2 MiB / nbytes)``) when smaller than a block, else its size (measured; module docstring)."""
    if nbytes >= MANAGED_BLOCK or nbytes <= 0:
        return nbytes
    return MANAGED_BLOCK // (MANAGED_BLOCK // nbytes)
