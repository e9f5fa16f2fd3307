"""Search the knobs the user left open for settings that fit, best first.

Searched (unless fixed): rank over {8..256}, seq_len over powers of two from 256 to the model's
max_position_embeddings, micro-batch over {1..64}, gradient checkpointing on/off, and the two paged AdamW
optimizers; grad_accum = ceil(target_batch / micro-batch). Memory grows monotonically with seq_len and
micro-batch, so each (rank, checkpointing, optimizer) scan stops at the first size that does not fit.

Ranking (``prefer="seq"``): longest seq_len, then tokens per optimizer step, then rank, then larger
micro-batch, then no checkpointing (faster), then 32-bit optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Callable, Iterable

from planner.memory.estimate import Estimate
from planner.output.plan import Recommendation
from planner.inputs.settings import RANKS, TrainSettings

BATCHES = (1, 2, 4, 8, 16, 32, 64)
SEARCHED_OPTIMIZERS = ("paged_adamw_32bit", "paged_adamw_8bit")
PREFERENCES = ("seq", "tokens", "rank", "batch")


def seq_lens(max_positions: int, start: int = 256) -> list[int]:
    lengths, n = [], start
    while n < max_positions:
        lengths.append(n)
        n *= 2
    lengths.append(max_positions)
    return lengths


@dataclass
class Search:
    base: TrainSettings
    fixed: set[str]
    max_positions: int
    target_batch: int = 16

    def _choices(self, field: str, default: Iterable) -> list:
        return [getattr(self.base, field)] if field in self.fixed else list(default)

    def candidates(self, estimator: Callable[[TrainSettings], Estimate], budget: int) -> list[Recommendation]:
        found: list[Recommendation] = []
        seqs = self._choices("seq_len", seq_lens(self.max_positions))
        for rank in self._choices("rank", RANKS):
            for checkpointing in self._choices("gradient_checkpointing", (True, False)):
                for optim in self._choices("optim", SEARCHED_OPTIMIZERS):
                    found += self._scan(estimator, budget, seqs, rank, checkpointing, optim)
        return found

    def _scan(self, estimator, budget, seqs, rank, checkpointing, optim) -> list[Recommendation]:
        found = []
        for seq in seqs:
            fitted_any = False
            for batch in self._choices("batch", BATCHES):
                accum = self.base.grad_accum if "grad_accum" in self.fixed else max(1, ceil(self.target_batch / batch))
                settings = self.base.model_copy(update={
                    "rank": rank, "gradient_checkpointing": checkpointing, "optim": optim,
                    "seq_len": seq, "batch": batch, "grad_accum": accum,
                })
                est = estimator(settings)
                if est.required_bytes > budget:
                    break
                fitted_any = True
                found.append(Recommendation(
                    settings=settings, peak_bytes=est.device_peak, headroom_bytes=budget - est.required_bytes,
                    tokens_per_step=batch * accum * seq,
                ))
            if not fitted_any:
                break
        return found


def rank_key(prefer: str) -> Callable[[Recommendation], tuple]:
    def key(rec: Recommendation) -> tuple:
        s = rec.settings
        by = {"seq": s.seq_len, "tokens": rec.tokens_per_step, "rank": s.rank, "batch": s.batch}
        order = [prefer] + [p for p in PREFERENCES if p != prefer]
        return tuple(by[p] for p in order) + (not s.gradient_checkpointing, s.optim.endswith("32bit"))
    return key


def best(found: list[Recommendation], prefer: str = "seq", top: int = 5) -> list[Recommendation]:
    return sorted(found, key=rank_key(prefer), reverse=True)[:top]
