"""``--memory-cap`` emulation, and the guard on bitsandbytes' paged (managed) optimizer memory. No torch here.

What ``--memory-cap C`` means: the measured process may add at most ``C`` bytes to the device's NVML
"used" memory, counted as

    CUDA context (NVML used after CUDA init minus before)
  + torch reserved memory (the caching allocator's segments)
  + bitsandbytes paged optimizer state (``cudaMallocManaged``), counted whole: ``prefetch_state`` moves it
    onto the GPU before every update, so in steady state it is resident.

The torch part is enforced by the allocator itself:
``torch.cuda.set_per_process_memory_fraction((C - context - paged) / total)`` makes any allocation that
would take reserved memory past ``C - context - paged`` fail with ``torch.OutOfMemoryError``, after the
allocator has freed its cache and retried, as on a card of that size. ``paged`` is the state the chosen
optimizer will page, known once the adapter exists; before that the fraction leaves it out. What lives
outside the allocator grows after init (cuBLAS handles, lazily loaded kernels); at every phase end the
worker also compares NVML used minus the pre-CUDA baseline with ``C`` and records an OOM in that phase
when it is over. To emulate a card, pass its total memory less what its driver keeps before any process
starts (NVML used on the idle card). Not emulated: a smaller card's speed and its own context size.
"""

from __future__ import annotations

from collections.abc import Iterable

from planner.inputs.units import MiB
from planner.memory.optimizer import optimizer_memory

PAGED_MARGIN = 512 * MiB  # free memory kept beside the managed pages when they are placed


class MemoryCapExceeded(Exception):
    """The process went over ``--memory-cap`` outside the allocator: an OOM on the emulated card."""


class PagedRefused(Exception):
    """The paged optimizer state would not fit in the device's free memory; the step is not attempted,
    because managed memory on a nearly full GPU can hang the GPU itself."""


def paged_state_bytes(optim: str, numels: Iterable[int]) -> int:
    """Bytes of managed memory a bitsandbytes optimizer pages for trainable tensors of these sizes, as the
    memory model counts them (:func:`planner.memory.optimizer.optimizer_memory`)."""
    return optimizer_memory(optim, [(1, n, 1) for n in numels], 4).paged


def allocator_fraction(cap: int, context: int, paged: int, total: int) -> float:
    """The ``set_per_process_memory_fraction`` that holds torch's reserved memory to ``cap - context - paged``."""
    budget = cap - context - paged
    if budget <= 0:
        raise MemoryCapExceeded(
            f"memory cap {cap} B leaves nothing for torch: CUDA context {context} B + paged optimizer state {paged} B"
        )
    return min(1.0, budget / total)


def check_cap(cap: int | None, device_used: int | None, baseline: int | None) -> None:
    """Raise :class:`MemoryCapExceeded` when the process's NVML footprint is over the cap."""
    if cap is None or device_used is None or baseline is None:
        return
    if device_used - baseline > cap:
        raise MemoryCapExceeded(f"device memory of this process {device_used - baseline} B is over the cap {cap} B")


def check_paged(paged: int, already_placed: int, free: int) -> None:
    """Refuse to let the optimizer place ``paged - already_placed`` more managed bytes unless the device
    has that much free memory plus :data:`PAGED_MARGIN`."""
    needed = paged - already_placed
    if needed > 0 and needed + PAGED_MARGIN > free:
        raise PagedRefused(
            f"paged optimizer state needs {needed} B of managed memory but the device has {free} B free "
            f"(keeping {PAGED_MARGIN} B margin): not run, managed memory on a full GPU can hang it"
        )
