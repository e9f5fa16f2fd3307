"""A pure-Python simulator of PyTorch's CUDA caching allocator (no torch import anywhere here).

It replays an allocation history (``alloc``/``free_requested``/``free_completed``, from a
``torch.cuda.memory._dump_snapshot`` pickle or built by other code) and reports the peaks of
``max_memory_allocated()`` and ``max_memory_reserved()`` the real allocator would reach, with or without
``expandable_segments``, ``max_split_size_mb``, ``roundup_power2_divisions``,
``garbage_collection_threshold`` and a memory cap.

- ``sizes``: rounding, pool choice, segment and page sizes.
- ``config``: ``AllocatorConfig`` and the ``PYTORCH_CUDA_ALLOC_CONF`` parser.
- ``blocks``: blocks and a pool's ordered sets (bisect on (stream, size, address)).
- ``stats``: torch's counters and their peaks.
- ``allocator``: ``CachingAllocator`` (best fit, split, merge, segments, release and retry, GC);
  ``expandable``: its expandable-segment half.
- ``replay``: ``simulate(events, config) -> SimulationResult``.
- ``sidecar``: a recorded history's settings and its empty_cache / memory-fraction calls.
- ``snapshot``: ``load_events(path, device)`` and ``load_snapshot(path)``, a restricted unpickler for snapshot files.
- ``python -m planner.allocator replay FILE [--json]``: the command line.

Followed: c10/cuda/CUDACachingAllocator.cpp and c10/core/AllocatorConfig.{h,cpp} (each module names the
functions). Read from the stored pytorch sources (the v2.9+ ``AcceleratorAllocatorConfig`` text and v2.13's
headers); no v2.11.0-tagged copy was reachable, and none of the rules used differs among those texts.
"""

from .allocator import CachingAllocator, OutOfMemory
from .config import AllocatorConfig
from .replay import Event, SimulationResult, simulate
from .snapshot import load_events, load_snapshot

__all__ = ["AllocatorConfig", "CachingAllocator", "Event", "OutOfMemory", "SimulationResult", "load_events",
           "load_snapshot", "simulate"]
