"""Search the knobs the user left open for settings that fit, best first.

Searched (unless fixed), from :mod:`planner.search.grid`: rank over ``RANKS`` up to ``max_rank`` (64 by
default, the QLoRA paper's and the seeds' range; ``--max-rank`` goes further), seq_len over
``doubling_seq_lens`` up to the model's max_position_embeddings, micro-batch over ``BATCHES``, gradient
checkpointing on/off, and the two paged AdamW optimizers; grad_accum = ceil(target_batch / micro-batch).
Memory grows monotonically with seq_len and micro-batch, so each (rank, checkpointing, optimizer) scan stops
at the first size that does not fit.

Ranking (``prefer="seq"``): longest seq_len, then tokens per optimizer step, then rank, then larger
micro-batch, then no checkpointing (faster), then 32-bit optimizer state.

The ranked plans come from a fast estimator; :func:`verified` re-prices the top ones with a slower, surer
one (the traced path) and walks down past those that do not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Callable, Iterable

from planner.inputs.settings import TrainSettings
from planner.memory.estimate import Estimate
from planner.output.plan import Recommendation
from planner.search.grid import BATCHES, DEFAULT_MAX_RANK, RANKS, SEARCHED_OPTIMIZERS, doubling_seq_lens

PREFERENCES = ("seq", "tokens", "rank", "batch")
Estimator = Callable[[TrainSettings], Estimate]
ManyEstimator = Callable[[list[TrainSettings]], list[Estimate]]  # several settings priced in one go


@dataclass
class Search:
    base: TrainSettings
    fixed: set[str]
    max_positions: int
    target_batch: int = 16
    max_rank: int = DEFAULT_MAX_RANK

    def _choices(self, field: str, default: Iterable) -> list:
        fixed = field in self.fixed or (field == "rank" and self.base.full_finetune)  # no rank without LoRA
        return [getattr(self.base, field)] if fixed else list(default)

    def candidates(self, estimator: Estimator, budget: int) -> list[Recommendation]:
        found: list[Recommendation] = []
        seqs = self._choices("seq_len", doubling_seq_lens(self.max_positions))
        for rank in self._choices("rank", [r for r in RANKS if r <= self.max_rank]):
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
                found.append(recommendation(settings, est, budget))
            if not fitted_any:
                break
        return found


def recommendation(settings: TrainSettings, est: Estimate, budget: int) -> Recommendation:
    return Recommendation(settings=settings, peak_bytes=est.device_peak, headroom_bytes=budget - est.required_bytes,
                          tokens_per_step=settings.tokens * settings.grad_accum)


def rank_key(prefer: str) -> Callable[[Recommendation], tuple]:
    def key(rec: Recommendation) -> tuple:
        s = rec.settings
        by = {"seq": s.seq_len, "tokens": rec.tokens_per_step, "rank": s.rank, "batch": s.batch}
        order = [prefer] + [p for p in PREFERENCES if p != prefer]
        return tuple(by[p] for p in order) + (not s.gradient_checkpointing, s.optim.endswith("32bit"))
    return key


def best(found: list[Recommendation], prefer: str = "seq", top: int = 5) -> list[Recommendation]:
    return sorted(found, key=rank_key(prefer), reverse=True)[:top]


def verified(found: list[Recommendation], verify: ManyEstimator | None, budget: int, prefer: str = "seq",
             top: int = 5) -> list[Recommendation]:
    """The ``top`` best plans that still fit when re-priced by ``verify`` (one call for the best ``2 * top``
    candidates: a traced verifier runs them in one process), walking down the ranking past those that do not;
    each kept plan carries the verified numbers. ``verify=None``: :func:`best`."""
    if verify is None:
        return best(found, prefer, top)
    candidates = best(found, prefer, 2 * top)
    checked = verify([rec.settings for rec in candidates])
    kept = [recommendation(rec.settings, est, budget) for rec, est in zip(candidates, checked) if est.required_bytes <= budget]
    return kept[:top]
