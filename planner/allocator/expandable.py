"""Expandable segments (``expandable_segments:True``): one address range per (stream, pool) that maps
physical pages as it grows and unmaps whole free pages on release.

Source: c10/cuda/CUDACachingAllocator.cpp Note [Expandable Segments], ``ExpandableSegment`` (address
space of 1 1/8 of the device's memory; ``map`` rounds a range out to whole pages, ``unmap`` rounds it in),
``DeviceCachingAllocator::find_expandable_block``, ``map_block``, ``try_allocate_expandable_block``,
``unmap_block``, ``release_expandable_segment``. The page is 2 MiB in the small pool and 20 MiB
(kLargeBuffer) in the large pool (:func:`.sizes.page_size`). Mapping is taken never to fail: a cap
is checked before, in ``alloc_block``.
"""

from __future__ import annotations

from bisect import bisect_left

from .blocks import Block, BlockPool, Segment
from .sizes import ceil_to, page_size


class ExpandableSegments:
    """The expandable-segment methods of :class:`.allocator.CachingAllocator`."""

    @staticmethod
    def _expandable_size(block: Block) -> int:
        """``get_free_block``'s ``expandable_size``: a free block followed by unmapped space could grow
        by all of it."""
        following = block.next
        return block.size + (following.size if following is not None and not following.mapped else 0)

    @staticmethod
    def _has_room(block: Block | None, size: int) -> bool:
        room = 0
        while room < size and block is not None and block.free:
            room += block.size
            block = block.next
        return room >= size

    def _find_expandable_block(self, pool: BlockPool, stream: int, size: int) -> Block:
        """``find_expandable_block``: the lowest-addressed unmapped range of this stream's segments that,
        with the free block just before it and the free blocks after it, holds ``size`` bytes; else a new
        segment, wholly unmapped."""
        keys = pool.unmapped_keys
        index = bisect_left(keys, (stream, -1))
        while index < len(keys) and keys[index][0] == stream:
            candidate = pool.unmapped[keys[index][1]]
            if candidate.prev is not None and candidate.prev.free:
                candidate = candidate.prev
            if self._has_room(candidate, size):
                return candidate
            index += 1
        page = page_size(pool.small)
        total = self.config.device_total_bytes
        span = ceil_to(total + total // 8, page)
        segment = Segment(self._new_address(span), page, span // page)
        self.stats.expandable.increase(1)
        block = Block(segment.base, span, stream, pool.small, segment, mapped=False)
        pool.insert_unmapped(block)
        return block

    def _map_block(self, pool: BlockPool, block: Block, size: int) -> None:
        """``map_block``: map the pages under the first ``size`` bytes of an unmapped block, leave the
        rest unmapped after it, merge the mapped part with free neighbours and cache it."""
        segment = block.segment
        mapped = ceil_to(block.addr - segment.base + size, segment.page) - (block.addr - segment.base)
        pool.remove_unmapped(block)
        block.mapped = True
        if mapped < block.size:
            rest = Block(block.addr + mapped, block.size - mapped, block.stream, block.small, segment, mapped=False)
            rest.splice(block, block.next)
            pool.insert_unmapped(rest)
            block.size = mapped
        self._try_merge(pool, block, block.prev)
        self._try_merge(pool, block, block.next)
        pool.insert(block)
        self.stats.reserved.increase(mapped)
        self.stats.device_allocs += 1

    def _try_allocate_expandable_block(self, pool: BlockPool, stream: int, size: int) -> Block:
        """``try_allocate_expandable_block``: map pages until the candidate free block holds ``size``."""
        block = self._find_expandable_block(pool, stream, size)
        if not block.mapped:
            self._map_block(pool, block, min(block.size, size))
        while block.size < size:
            following = block.next
            self._map_block(pool, following, min(size - block.size, following.size))
            block = following
        pool.remove(block)
        return block

    def _unmap_block(self, pool: BlockPool, block: Block) -> None:
        """``unmap_block``: unmap the whole pages inside a free block; the partial pages at its ends stay
        mapped as free blocks of their own."""
        segment = block.segment
        offset = block.addr - segment.base
        begin = ceil_to(offset, segment.page)
        end = (offset + block.size) // segment.page * segment.page
        if begin >= end:
            return
        pool.remove(block)
        start, length = segment.base + begin, end - begin
        if start > block.addr:
            before = Block(block.addr, start - block.addr, block.stream, block.small, segment)
            before.splice(block.prev, block)
            pool.insert(before)
        after_size = block.addr + block.size - (start + length)
        if after_size > 0:
            after = Block(start + length, after_size, block.stream, block.small, segment)
            after.splice(block, block.next)
            pool.insert(after)
        block.addr, block.size, block.mapped = start, length, False
        self._try_merge(pool, block, block.prev)
        self._try_merge(pool, block, block.next)
        pool.insert_unmapped(block)
        self.stats.reserved.decrease(length)
        self.stats.device_frees += 1

    def _release_expandable_segment(self, pool: BlockPool, block: Block) -> None:
        """``release_expandable_segment``: a segment with no page mapped is one unmapped block; drop it."""
        pool.remove_unmapped(block)
        self.stats.expandable.decrease(1)
