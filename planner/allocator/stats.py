"""The allocator's counters, as ``torch.cuda.memory_stats()`` reports them.

Source: c10/cuda/CUDACachingAllocator.cpp ``increase_stat``/``decrease_stat`` (a peak is updated on
every increase) and where each is called: ``allocated_bytes`` and ``requested_bytes`` rise in
``alloc_found_block`` by the block's rounded ``size`` and by the request; ``allocated_bytes`` falls in
``free`` (when the tensor dies, the ``free_requested`` event), ``requested_bytes`` in ``free_block``
(``free_completed``); ``reserved_bytes`` rises in ``alloc_block`` (cudaMalloc) and
``map_block`` and falls in ``release_block`` (cudaFree) and ``unmap_block``. ``max_memory_allocated()``
and ``max_memory_reserved()`` are the aggregate peaks of ``allocated_bytes`` and ``reserved_bytes``.
"""

from __future__ import annotations


class Stat:
    """One ``Stat``: the current value and its peak."""

    __slots__ = ("current", "peak")

    def __init__(self) -> None:
        self.current = self.peak = 0

    def increase(self, amount: int) -> None:
        self.current += amount
        if self.current > self.peak:
            self.peak = self.current

    def decrease(self, amount: int) -> None:
        self.current -= amount


class Stats:
    """The aggregate counters the simulator keeps (torch keeps them per pool too).
    ``segments`` counts live cudaMalloc segments (torch's ``segment`` stat, which expandable segments do
    not touch), ``expandable`` live expandable segments (not a torch stat); ``device_allocs`` and
    ``device_frees`` count cudaMalloc and page-mapping calls and cudaFree and unmapping calls
    (``num_device_alloc``/``num_device_free``)."""

    __slots__ = ("allocated", "reserved", "requested", "segments", "expandable", "device_allocs",
                 "device_frees", "alloc_retries", "ooms")

    def __init__(self) -> None:
        self.allocated, self.reserved, self.requested = Stat(), Stat(), Stat()
        self.segments, self.expandable = Stat(), Stat()
        self.device_allocs = self.device_frees = self.alloc_retries = self.ooms = 0
