"""One device's caching allocator: best-fit reuse, splitting, merging, new segments, release and retry.

Source: c10/cuda/CUDACachingAllocator.cpp ``DeviceCachingAllocator`` (torch v2.11; read in the
v2.9+ text where the settings come from ``AcceleratorAllocatorConfig``): ``malloc``, ``get_free_block``,
``should_split``, ``alloc_found_block``, ``free``/``free_block``, ``try_merge_blocks``, ``alloc_block``,
``release_available_cached_blocks``, ``release_cached_blocks``/``release_blocks``/``release_block``
(``emptyCache``) and ``garbage_collect_cached_blocks``. The expandable-segment half is in
:mod:`.expandable`. Not modelled: CUDA-graph private pools and ``MemPool``s, cross-stream events (the
replay is told when a block's free completes), a cudaMalloc failing below the cap (no cap: the device is
taken to be large enough), and the driver's exact addresses, which decide ties between cached blocks of
one size. Each new segment is placed below the previous ones: on an H200 with CUDA 13 and torch 2.11,
cudaMalloc mostly hands out decreasing addresses. With that order 10 synthetic GPU histories replay with
torch's very segment calls (with increasing addresses two took one segment more or fewer), and of 17
QLoRA histories 15 do, two differing by one 2 MiB small-pool segment (the driver put it in a gap).
"""

from __future__ import annotations

from .blocks import Block, BlockPool
from .config import UNLIMITED, AllocatorConfig
from .expandable import ExpandableSegments
from .sizes import MIN_BLOCK_SIZE, ROUND_LARGE, SMALL_SIZE, allocation_size, ceil_to, is_small, round_size
from .stats import Stats

ADDRESS_TOP = 1 << 47


class OutOfMemory(Exception):
    """``malloc`` found no block and could not create one, even after releasing the cache."""


class CachingAllocator(ExpandableSegments):
    """``DeviceCachingAllocator`` for one device: ``malloc`` a request, then ``free_requested`` when the
    tensor dies and ``free_completed`` when its block may be reused; ``empty_cache`` and ``set_cap`` as
    torch's ``emptyCache`` and ``setMemoryFraction``."""

    def __init__(self, config: AllocatorConfig):
        self.config = config
        self.pools = {True: BlockPool(small=True), False: BlockPool(small=False)}
        self.stats = Stats()
        self._next_address = ADDRESS_TOP
        self.set_cap(config.cap_bytes)

    def set_cap(self, cap_bytes: int | None) -> None:
        """``setMemoryFraction``: from now on ``allowed_memory_maximum`` is ``cap_bytes`` (None: no cap);
        garbage collection runs only under a cap."""
        self.cap = cap_bytes
        self._gc = cap_bytes is not None and self.config.garbage_collection_threshold > 0

    def malloc(self, size: int, stream: int) -> Block:
        """``malloc``: round, pick the pool, reuse the best cached block; else create a segment, else free
        oversize cached blocks and retry, else free every unsplit cached block and retry, else OOM."""
        rounded = round_size(size, self.config.roundup_power2_divisions)
        pool = self.pools[is_small(rounded)]
        block = self._get_free_block(pool, stream, rounded)
        if block is None:
            alloc = allocation_size(rounded)
            if self._gc:
                self._garbage_collect()
            block = self._alloc_block(pool, stream, rounded, alloc)
            if block is None and self._release_available_cached_blocks(pool, stream, rounded):
                block = self._alloc_block(pool, stream, rounded, alloc)
            if block is None:
                self.empty_cache()
                self.stats.alloc_retries += 1
                block = self._alloc_block(pool, stream, rounded, alloc)
            if block is None:
                self.stats.ooms += 1
                raise OutOfMemory(f"cannot allocate {alloc} bytes for a request of {size}")
        return self._alloc_found_block(pool, block, stream, rounded, size)

    def free_requested(self, block: Block) -> None:
        """``free``: the tensor died; ``allocated_bytes`` drops now, the block is not reusable yet."""
        self.stats.allocated.decrease(block.size)

    def free_completed(self, block: Block) -> None:
        """``free_block``: merge with free neighbours of the same segment and cache the result."""
        pool = self.pools[block.small]
        self.stats.requested.decrease(block.requested)
        self._try_merge(pool, block, block.prev)
        self._try_merge(pool, block, block.next)
        pool.insert(block)

    def empty_cache(self) -> None:
        """``release_cached_blocks``: cudaFree every fully free cudaMalloc segment and unmap every whole
        free page of the expandable segments (an expandable segment left with no mapped page goes), the
        large pool first."""
        for pool in (self.pools[False], self.pools[True]):
            to_unmap = []
            for _, _, addr in list(pool.keys):
                block = pool.by_addr[addr]
                if block.segment is not None:
                    to_unmap.append(block)
                elif not block.is_split():
                    self._release_block(pool, block)
            for block in to_unmap:
                self._unmap_block(pool, block)
                if not block.is_split():
                    self._release_expandable_segment(pool, block)

    def _get_free_block(self, pool: BlockPool, stream: int, rounded: int) -> Block | None:
        """``get_free_block``: the smallest cached block of this stream that fits, lowest address among
        equals. In an expandable segment a block ending where unmapped space begins counts as the size it
        could grow to, so a plain block of the next sizes is preferred. An oversize block
        (>= max_split_size) serves only an oversize request, and only if it exceeds the request by less
        than max_non_split_rounding_size (kLargeBuffer by default)."""
        if self._gc:
            pool.calls += 1
        index = pool.first_fit_index(stream, rounded)
        block = pool.block_at(index)
        if block is None or block.stream != stream:
            return None
        while block.segment is not None:
            following = pool.block_at(index + 1)
            if following is None or following.stream != stream or \
                    self._expandable_size(following) >= self._expandable_size(block):
                break
            index, block = index + 1, following
        limit = self.config.max_split_size
        if rounded < limit <= block.size:
            return None
        if rounded >= limit and block.size >= rounded + self.config.max_non_split_rounding_size:
            return None
        pool.remove(block)
        return block

    def _should_split(self, block: Block, rounded: int) -> bool:
        """``should_split``: in the small pool and in expandable segments, split off any rest of at least
        512 bytes; in the large pool only below max_split_size and for a rest above 1 MiB (kSmallSize)."""
        remaining = block.size - rounded
        if block.small or self.config.expandable_segments:
            return remaining >= MIN_BLOCK_SIZE
        return rounded < self.config.max_split_size and remaining > SMALL_SIZE

    def _alloc_found_block(self, pool: BlockPool, block: Block, stream: int, rounded: int, size: int) -> Block:
        """``alloc_found_block``: the request takes the front of the block, the rest goes back to the pool;
        ``allocated_bytes`` counts the rounded block size, ``requested_bytes`` the request."""
        if self._should_split(block, rounded):
            rest = block
            block = Block(rest.addr, rounded, stream, pool.small, rest.segment)
            block.splice(rest.prev, rest)
            rest.addr += rounded
            rest.size -= rounded
            pool.insert(rest)
        block.requested = size
        self.stats.allocated.increase(block.size)
        self.stats.requested.increase(size)
        return block

    def _try_merge(self, pool: BlockPool, dst: Block, src: Block | None) -> None:
        """``try_merge_blocks``: absorb a free neighbour of the same mapped state."""
        if src is None or not src.free or src.mapped != dst.mapped:
            return
        pool.discard(src)
        if dst.prev is src:
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev is not None:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size

    def _new_address(self, size: int) -> int:
        self._next_address -= ceil_to(size, ROUND_LARGE)
        return self._next_address

    def _alloc_block(self, pool: BlockPool, stream: int, rounded: int, alloc: int) -> Block | None:
        """``alloc_block``: refuse when the reserved bytes plus ``get_allocation_size`` would pass the cap
        (set_per_process_memory_fraction; checked with that size in expandable mode too); else map pages
        of an expandable segment, or cudaMalloc a new segment of ``alloc`` bytes."""
        if self.cap is not None and self.stats.reserved.current + alloc > self.cap:
            return None
        if self.config.expandable_segments:
            return self._try_allocate_expandable_block(pool, stream, rounded)
        self.stats.segments.increase(1)
        self.stats.reserved.increase(alloc)
        self.stats.device_allocs += 1
        return Block(self._new_address(alloc), alloc, stream, pool.small)

    def _release_block(self, pool: BlockPool, block: Block) -> None:
        """``release_block``: cudaFree a whole free cudaMalloc segment."""
        pool.remove(block)
        self.stats.segments.decrease(1)
        self.stats.reserved.decrease(block.size)
        self.stats.device_frees += 1

    def _release_available_cached_blocks(self, pool: BlockPool, stream: int, rounded: int) -> bool:
        """``release_available_cached_blocks`` (only with max_split_size set): cudaFree the smallest cached
        oversize block of at least max(request, max_split_size); failing one, cudaFree oversize blocks from
        the largest down until that many bytes went. True when enough was released."""
        limit = self.config.max_split_size
        if limit == UNLIMITED:
            return False
        wanted = max(rounded, limit)
        index = pool.first_fit_index(stream, wanted)
        block = pool.block_at(index)
        if block is not None and block.stream == stream and block.segment is None:
            self._release_block(pool, block)
            return True
        released = 0
        for index in range(index - 1, -1, -1):
            block = pool.block_at(index)
            if released >= wanted or block.size < limit or block.stream != stream:
                break
            if block.segment is None:
                self._release_block(pool, block)
                released += block.size
        return released >= wanted

    def _garbage_collect(self) -> None:
        """``garbage_collect_cached_blocks`` (garbage_collection_threshold with a cap): above threshold x
        cap reserved, cudaFree unsplit large-pool cached blocks at least as old as the average (age: pool
        searches since the block was cached), pass after pass, until the excess is reclaimed."""
        pool = self.pools[False]
        threshold = int(self.config.garbage_collection_threshold * self.cap)
        if self.stats.reserved.current <= threshold:
            return
        target = self.stats.reserved.current - threshold
        unsplit = [pool.by_addr[addr] for _, _, addr in pool.keys if not pool.by_addr[addr].is_split()]
        total_age, count = sum(pool.calls - b.gc_base for b in unsplit), len(unsplit)
        reclaimed, freed = 0, True
        while reclaimed < target and freed and count > 0:
            average, freed = total_age / count, False
            for _, _, addr in list(pool.keys):
                block = pool.by_addr[addr]
                age = pool.calls - block.gc_base
                if not block.is_split() and block.segment is None and age >= average:
                    freed = True
                    reclaimed += block.size
                    total_age -= age
                    count -= 1
                    self._release_block(pool, block)
