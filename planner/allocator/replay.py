"""Replay an allocation history through the simulated allocator: ``simulate(events, config)``.

Which free to follow: torch's ``free`` (trace ``free_requested``) lowers ``allocated_bytes`` when the
tensor dies, but a block used on another stream goes back to the pool only in ``free_block`` (trace
``free_completed``), once its events have completed (``process_events`` at a later ``malloc``). A block
is reusable exactly from ``free_completed`` on, so the replay caches it there and lowers
``allocated_bytes`` at ``free_requested``: both stats then move when torch's do. (A ``free_completed``
that torch's OOM path produced by synchronizing, inside a ``malloc``, appears before that ``alloc`` in
the trace and is replayed before it.)

Sizes: ``alloc_found_block`` records the ``alloc`` entry with ``orig_size``, the request before
``round_size``, and ``free`` / ``free_block`` record ``block->requested_size``: the replay starts from
requested sizes and rounds them itself, as torch did.

A history that did not start with the process's first allocation (recording began late, or the ring
buffer of ``_record_memory_history(max_entries=...)`` wrapped) frees blocks it never allocated: those
frees are skipped and counted in ``unknown_frees``, and the peaks are then lower bounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from ..errors import QPlanError
from .allocator import CachingAllocator, OutOfMemory
from .config import AllocatorConfig

ACTIONS = ("alloc", "free_requested", "free_completed", "empty_cache", "set_cap")


@dataclass(frozen=True, slots=True)
class Event:
    """One allocator call: ``alloc`` of ``size`` requested bytes on ``stream``, answered with the address
    ``addr`` (any identifier pairing it with its frees); ``free_requested``/``free_completed`` of ``addr``;
    ``empty_cache`` (torch.cuda.empty_cache()) and ``set_cap`` to ``size`` bytes
    (set_per_process_memory_fraction: fraction x device total), which a memory history does not record:
    callers who know when they happened insert them (:mod:`.sidecar`)."""

    action: str
    addr: int = 0
    size: int = 0
    stream: int = 0


@dataclass(frozen=True)
class SimulationResult:
    """Peaks and final values of torch's counters, in bytes, and what the replay had to skip."""

    reserved_peak_bytes: int
    allocated_peak_bytes: int
    requested_peak_bytes: int
    reserved_final_bytes: int
    allocated_final_bytes: int
    segments: int
    segments_peak: int
    device_allocs: int
    device_frees: int
    alloc_retries: int
    events: int
    ooms: int
    unknown_frees: int
    warning: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def _event(raw: Event | Mapping) -> Event:
    if isinstance(raw, Event):
        return raw
    try:
        return Event(raw["action"], raw.get("addr", 0), raw.get("size", 0), raw.get("stream", 0))
    except (KeyError, TypeError, AttributeError):
        raise QPlanError(f"an event must be a mapping with 'action' (and addr, size, stream), got {raw!r}") from None


def simulate(events: Iterable[Event | Mapping], config: AllocatorConfig | None = None) -> SimulationResult:
    """Run ``events`` in order through a fresh :class:`CachingAllocator` with ``config`` (torch's defaults
    when None). An ``alloc`` the simulated allocator cannot serve counts in ``ooms`` and its frees are
    skipped; the replay goes on."""
    allocator = CachingAllocator(config or AllocatorConfig())
    live, requested, failed, unknown = {}, set(), set(), set()
    count = 0
    for raw in events:
        event = _event(raw)
        action, addr = event.action, event.addr
        count += 1
        if action == "alloc":
            if addr in live:
                raise QPlanError(f"the history allocates address {addr:#x} twice without freeing it")
            try:
                live[addr] = allocator.malloc(event.size, event.stream)
            except OutOfMemory:
                failed.add(addr)
        elif action == "free_requested":
            block = live.get(addr)
            if block is not None:
                allocator.free_requested(block)
                requested.add(addr)
            elif addr not in failed:
                unknown.add(addr)
        elif action == "free_completed":
            block = live.pop(addr, None)
            if block is not None:
                if addr not in requested:
                    allocator.free_requested(block)
                requested.discard(addr)
                allocator.free_completed(block)
            elif addr not in failed:
                unknown.add(addr)
            failed.discard(addr)
        elif action == "empty_cache":
            allocator.empty_cache()
        elif action == "set_cap":
            allocator.set_cap(event.size)
        else:
            raise QPlanError(f"unknown event action {action!r} (expected one of {', '.join(ACTIONS)})")
    return _result(allocator, count, len(unknown))


def _result(allocator: CachingAllocator, events: int, unknown: int) -> SimulationResult:
    stats = allocator.stats
    warnings = []
    if unknown:
        warnings.append(f"{unknown} frees of blocks the history never allocated: it did not start with the "
                        "process's first allocation (late start or a wrapped ring buffer), peaks are lower bounds")
    if stats.ooms:
        warnings.append(f"{stats.ooms} allocations did not fit the simulated allocator (out of memory)")
    return SimulationResult(
        reserved_peak_bytes=stats.reserved.peak, allocated_peak_bytes=stats.allocated.peak,
        requested_peak_bytes=stats.requested.peak, reserved_final_bytes=stats.reserved.current,
        allocated_final_bytes=stats.allocated.current,
        segments=stats.segments.current + stats.expandable.current,
        segments_peak=stats.segments.peak + stats.expandable.peak,
        device_allocs=stats.device_allocs, device_frees=stats.device_frees, alloc_retries=stats.alloc_retries,
        events=events, ooms=stats.ooms, unknown_frees=unknown, warning="; ".join(warnings) or None)
