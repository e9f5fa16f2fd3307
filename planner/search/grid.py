"""The one vocabulary of searched values: every search (the recommender, the smallest change, the
alternatives) draws its ranks, micro-batches, optimizers and sequence lengths from here."""

from __future__ import annotations

RANKS: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
DEFAULT_MAX_RANK = 64  # the recommender's default ceiling: the QLoRA paper's and the seeds' range
BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
# The recommender searches the two paged AdamW variants; the smallest change may swap within the AdamW family
# (Adafactor and SGD change the algorithm, so neither search swaps them in).
SEARCHED_OPTIMIZERS: tuple[str, ...] = ("paged_adamw_32bit", "paged_adamw_8bit")
ADAMW_FAMILY: tuple[str, ...] = ("paged_adamw_32bit", "adamw_torch", "paged_adamw_8bit", "adamw_8bit")
SEQ_START = 256  # the recommender's shortest seq_len
SEQ_STEP = 128  # the smallest change's seq_len granularity


def doubling_seq_lens(max_positions: int, start: int = SEQ_START) -> list[int]:
    """The recommender's lengths: powers of two from ``start`` below ``max_positions``, then the maximum."""
    lengths, n = [], start
    while n < max_positions:
        lengths.append(n)
        n *= 2
    lengths.append(max_positions)
    return lengths


def shorter_seq_lens(seq_len: int) -> list[int]:
    """The smallest change's lengths, shortest first: multiples of :data:`SEQ_STEP` below ``seq_len``, or
    halves (down to 16) below it."""
    if seq_len > SEQ_STEP:
        return list(range(SEQ_STEP, seq_len, SEQ_STEP))
    return sorted({seq_len >> k for k in range(1, 8) if seq_len >> k >= 16})
