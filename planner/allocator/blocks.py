"""Blocks and the two ordered sets of a pool.

Source: c10/cuda/CUDACachingAllocator.cpp ``struct Block`` (a piece of one segment, linked to its
neighbours by ``prev``/``next``), ``struct BlockPool`` (``blocks``: the cached free blocks ordered by
``BlockComparatorSize`` = (stream, size, address); ``unmapped``: the unmapped parts of expandable segments
ordered by ``BlockComparatorAddress`` = (stream, address)). Both sets are sorted Python lists searched with
``bisect``, so a lookup is O(log n) and an insertion or removal one C-level memmove.
"""

from __future__ import annotations

from bisect import bisect_left, insort


class Segment:
    """An expandable segment's address space: ``pages`` pages of ``page`` bytes from ``base``."""

    __slots__ = ("base", "page", "pages")

    def __init__(self, base: int, page: int, pages: int):
        self.base, self.page, self.pages = base, page, pages


class Block:
    """``Block``: ``free`` is true while the block sits in its pool's ``blocks`` or ``unmapped`` set (torch:
    not allocated, no outstanding events, no stream uses), the condition under which a neighbour may merge
    with it (``try_merge_blocks``). ``segment`` is the expandable segment, None for a cudaMalloc segment."""

    __slots__ = ("addr", "size", "stream", "small", "prev", "next", "free", "mapped", "segment",
                 "requested", "gc_base")

    def __init__(self, addr: int, size: int, stream: int, small: bool, segment: Segment | None = None,
                 mapped: bool = True):
        self.addr, self.size, self.stream, self.small = addr, size, stream, small
        self.prev: Block | None = None
        self.next: Block | None = None
        self.free = False
        self.mapped = mapped
        self.segment = segment
        self.requested = 0
        self.gc_base = 0

    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None

    def splice(self, before: Block | None, after: Block | None) -> None:
        """Put this block between ``before`` and ``after`` (``Block::splice``)."""
        if before is not None:
            before.next = self
        if after is not None:
            after.prev = self
        self.prev, self.next = before, after


class BlockPool:
    """One ``BlockPool`` (the small or the large one) with its ``get_free_blocks_call_count`` for the
    garbage collector; free blocks are found by address through ``by_addr``."""

    __slots__ = ("small", "keys", "by_addr", "unmapped_keys", "unmapped", "calls")

    def __init__(self, small: bool):
        self.small = small
        self.keys: list[tuple[int, int, int]] = []  # (stream, size, addr) of the mapped free blocks
        self.by_addr: dict[int, Block] = {}
        self.unmapped_keys: list[tuple[int, int]] = []  # (stream, addr) of the unmapped blocks
        self.unmapped: dict[int, Block] = {}
        self.calls = 0

    def insert(self, block: Block) -> None:
        """``insert_into_blocks``: cache a free mapped block and stamp its garbage-collection age base."""
        block.gc_base, block.free = self.calls, True
        insort(self.keys, (block.stream, block.size, block.addr))
        self.by_addr[block.addr] = block

    def remove(self, block: Block) -> None:
        key = (block.stream, block.size, block.addr)
        del self.keys[bisect_left(self.keys, key)]
        del self.by_addr[block.addr]
        block.free = False

    def insert_unmapped(self, block: Block) -> None:
        block.free = True
        insort(self.unmapped_keys, (block.stream, block.addr))
        self.unmapped[block.addr] = block

    def remove_unmapped(self, block: Block) -> None:
        del self.unmapped_keys[bisect_left(self.unmapped_keys, (block.stream, block.addr))]
        del self.unmapped[block.addr]
        block.free = False

    def discard(self, block: Block) -> None:
        """Take a free block out of whichever set holds it."""
        if block.mapped:
            self.remove(block)
        else:
            self.remove_unmapped(block)

    def first_fit_index(self, stream: int, size: int) -> int:
        """``blocks.lower_bound({stream, size})``: index of the smallest cached block of ``stream``
        with at least ``size`` bytes, lowest address first among equals (may be past this stream)."""
        return bisect_left(self.keys, (stream, size, -1))

    def block_at(self, index: int) -> Block | None:
        """The cached block at ``index`` of the (stream, size, address) order, None past the end."""
        return self.by_addr[self.keys[index][2]] if index < len(self.keys) else None
