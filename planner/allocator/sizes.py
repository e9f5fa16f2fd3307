"""Size rules of the caching allocator: request rounding, pool choice and segment size.

Source (the rules, in torch v2.11 as in v2.9+ and v2.13): c10/cuda/CUDACachingAllocator.cpp
``DeviceCachingAllocator::round_size``, ``roundup_power2_next_division``, ``get_pool``,
``get_allocation_size``; the constants kMinBlockSize, kSmallSize, kSmallBuffer, kMinLargeAlloc, kRoundLarge
(c10/core/AllocatorConfig.h in v2.13) and kLargeBuffer (CUDACachingAllocator.cpp); the interval table of
``AcceleratorAllocatorConfig::roundup_power2_divisions(size)`` (c10/core/AllocatorConfig.cpp).
"""

from __future__ import annotations

MiB = 1 << 20

MIN_BLOCK_SIZE = 512  # kMinBlockSize: every block is a multiple of 512 bytes
SMALL_SIZE = 1 * MiB  # kSmallSize: requests up to 1 MiB (rounded) go to the small pool
SMALL_BUFFER = 2 * MiB  # kSmallBuffer: small-pool segment, and small-pool page of an expandable segment
MIN_LARGE_ALLOC = 10 * MiB  # kMinLargeAlloc: large requests below this get a LARGE_BUFFER segment
ROUND_LARGE = 2 * MiB  # kRoundLarge: larger requests get a segment rounded up to 2 MiB
LARGE_BUFFER = 20 * MiB  # kLargeBuffer: 20 MiB segment; also the large-pool page of an expandable segment
ROUNDUP_INTERVALS = 16  # kRoundUpPowerOfTwoIntervals: 1 MiB .. 64 GiB, one slot per power of two


def ceil_to(size: int, step: int) -> int:
    """``size`` rounded up to a multiple of ``step``."""
    return -(-size // step) * step


def is_small(rounded: int) -> bool:
    """``get_pool``: a rounded request of at most kSmallSize is served by the small pool."""
    return rounded <= SMALL_SIZE


def divisions_for(size: int, divisions: tuple[int, ...]) -> int:
    """``roundup_power2_divisions(size)``: slot ``log2(size) - 20`` clamped to [0, 15] (1 MiB .. 64 GiB)."""
    index = min(max(size.bit_length() - 1 - 20, 0), ROUNDUP_INTERVALS - 1)
    return divisions[index]


def round_size(size: int, divisions: tuple[int, ...]) -> int:
    """``round_size``: below 512 -> 512; with ``d > 1`` power-of-two divisions for this size and
    ``size > 512 * d``, round up to the next of the d equal steps between two powers of two
    (``roundup_power2_next_division``, a power of two stays itself); otherwise up to a multiple of 512."""
    if size < MIN_BLOCK_SIZE:
        return MIN_BLOCK_SIZE
    d = divisions_for(size, divisions)
    if d > 1 and size > MIN_BLOCK_SIZE * d:
        if size & (size - 1) == 0:
            return size
        floor = 1 << (size.bit_length() - 1)
        step = floor >> (d.bit_length() - 1)
        if step == 0:
            return floor << 1
        return ceil_to(size, step)
    return ceil_to(size, MIN_BLOCK_SIZE)


def allocation_size(rounded: int) -> int:
    """``get_allocation_size``: the cudaMalloc size for a request no cached block serves: 2 MiB for the
    small pool, 20 MiB for large requests below 10 MiB, else the request rounded up to 2 MiB."""
    if rounded <= SMALL_SIZE:
        return SMALL_BUFFER
    if rounded < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ceil_to(rounded, ROUND_LARGE)


def page_size(small: bool) -> int:
    """``find_expandable_block``: an expandable segment maps 2 MiB pages in the small pool and 20 MiB
    (kLargeBuffer) pages in the large pool."""
    return SMALL_BUFFER if small else LARGE_BUFFER
