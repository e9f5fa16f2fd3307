"""The smallest change to one exact run that makes it fit (``qplan check``, ``preflight()``, the callback).

Best first:

1. fewest knobs changed; the micro-batch split is one knob: ``per_device_train_batch_size`` goes down to a
   divisor and ``gradient_accumulation_steps`` up by the same factor, so the effective batch is kept;
2. then the least loss of data per step: the longest ``max_seq_length``, then the most tokens per optimizer
   step (``batch * grad_accum * seq_len``);
3. then the mildest kind of change: only slower (gradient checkpointing on, a smaller micro-batch split) <
   8-bit optimizer state or quantization constants (8-bit / paged AdamW, double quantization) < a lower
   LoRA rank;
4. then the most kept: highest rank, 32-bit optimizer state, largest micro-batch, checkpointing off;
   last, the lower peak.

Candidate values (:mod:`planner.search.grid`): checkpointing on; micro-batch divisors of the current one;
the AdamW family; double quantization on (4-bit only); ranks from ``RANKS`` below the current one; seq_len
from ``shorter_seq_lens`` (binary search: memory grows with seq_len).
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel, Field

from planner.inputs.config_file import Mapped, show
from planner.inputs.settings import TrainSettings
from planner.search.grid import ADAMW_FAMILY, RANKS, shorter_seq_lens
from planner.search.recommend import Estimator

# kind of change -> how much of the run it gives up (rule 3 above; seq_len is ranked by rule 2)
TIERS = {"gradient_checkpointing": 0, "micro_batch": 0, "double_quant": 1, "optim": 1, "rank": 2, "seq_len": 3}
# kind of change -> the TrainSettings fields it writes
FIELDS = {
    "gradient_checkpointing": ("gradient_checkpointing",), "micro_batch": ("batch", "grad_accum"),
    "double_quant": ("double_quant",), "optim": ("optim",), "rank": ("rank",), "seq_len": ("seq_len",),
}


class Change(BaseModel):
    """One line of the patch: ``training.max_seq_length: 2048 -> 1024``."""

    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {show(self.old)} -> {show(self.new)}"


class Suggestion(BaseModel):
    changes: list[Change]
    settings: TrainSettings
    peak_bytes: int
    headroom_bytes: int
    tokens_per_step: int = Field(description="batch * grad_accum * seq_len after the change")
    rule: str = ("fewest knobs changed, then the longest seq_len and most tokens per step kept, "
                 "then the mildest kind: slower < 8-bit state < lower rank")


def _divisors(n: int) -> list[int]:
    return [d for d in range(n - 1, 0, -1) if n % d == 0]


def knob_options(settings: TrainSettings) -> dict[str, list[dict]]:
    """Kind of change -> the updates it may make (all but seq_len, which is searched by bisection)."""
    s = settings
    options: dict[str, list[dict]] = {}
    if not s.gradient_checkpointing:
        options["gradient_checkpointing"] = [{"gradient_checkpointing": True}]
    if s.batch > 1:
        options["micro_batch"] = [{"batch": b, "grad_accum": s.grad_accum * s.batch // b} for b in _divisors(s.batch)]
    if s.quant in ("nf4", "fp4") and not s.double_quant:
        options["double_quant"] = [{"double_quant": True}]
    if s.optim in ADAMW_FAMILY:
        options["optim"] = [{"optim": o} for o in ADAMW_FAMILY if o != s.optim]
    if not s.full_finetune:
        options["rank"] = [{"rank": r} for r in sorted(RANKS, reverse=True) if r < s.rank]
    return {kind: values for kind, values in options.items() if values}


def _rank_key(kinds: tuple[str, ...], s: TrainSettings, peak: int) -> tuple:
    """Smaller is a smaller change: rules 1-4 of the module doc in order, then the lower peak."""
    tiers = [TIERS[k] for k in kinds]
    return (len(kinds), -s.seq_len, -s.tokens * s.grad_accum, max(tiers, default=-1), sum(tiers), -s.rank,
            s.optim.endswith("8bit"), -s.batch, s.gradient_checkpointing, peak)


def smallest_change(mapped: Mapped, estimator: Estimator, budget: int) -> Suggestion | None:
    """The smallest change (module doc) that brings the peak within ``budget``; None when nothing does."""
    base = mapped.settings
    options = knob_options(base)
    seqs = shorter_seq_lens(base.seq_len)
    best: tuple | None = None
    kinds_all = list(options)
    for n in range(0, len(kinds_all) + 1):
        for kinds in itertools.combinations(kinds_all, n):
            for updates in itertools.product(*(options[k] for k in kinds)):
                update = {key: value for part in updates for key, value in part.items()}
                for with_seq in (False, True):
                    if with_seq and not seqs:
                        continue
                    found = _fit(base.model_copy(update=update), estimator, budget, seqs if with_seq else None)
                    if found is None:
                        continue
                    settings, est = found
                    used = kinds + (("seq_len",) if with_seq else ())
                    key = _rank_key(used, settings, est.required_bytes)
                    if best is None or key < best[0]:
                        best = (key, used, settings, est)
        if best is not None and best[0][0] <= n:
            break  # every later combination changes more than n knobs
    if best is None:
        return None
    _, used, settings, est = best
    return Suggestion(
        changes=_changes(mapped, used, settings), settings=settings, peak_bytes=est.device_peak,
        headroom_bytes=budget - est.required_bytes, tokens_per_step=settings.tokens * settings.grad_accum,
    )


def _fit(settings: TrainSettings, estimator: Estimator, budget: int, seqs: list[int] | None):
    """(settings, estimate) that fit: as given, or (``seqs``) with the longest seq_len in ``seqs`` that fits."""
    if seqs is None:
        est = estimator(settings)
        return (settings, est) if est.required_bytes <= budget else None
    lo, hi, found = 0, len(seqs) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        trial = settings.model_copy(update={"seq_len": seqs[mid]})
        est = estimator(trial)
        if est.required_bytes <= budget:
            found, lo = (trial, est), mid + 1
        else:
            hi = mid - 1
    return found


def _changes(mapped: Mapped, kinds: tuple[str, ...], new: TrainSettings) -> list[Change]:
    # every TrainSettings.optim name is also a TrainingArguments.optim name, so values are written as they are
    return [Change(field=mapped.paths[setting], old=mapped.written[setting], new=mapped.written_as(setting, getattr(new, setting)))
            for kind in kinds for setting in FIELDS[kind]]
