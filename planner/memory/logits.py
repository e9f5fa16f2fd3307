"""Logits and cross-entropy: at 128k-256k vocabularies the largest activation term.

transformers 5 ``LlamaForCausalLM.forward`` makes logits in lm_head's output dtype (bf16 under autocast,
else the lm_head weight dtype: fp32 after ``prepare_model_for_kbit_training``); ``loss/loss_utils.py:
ForCausalLMLoss`` upcasts them with ``.float()`` (a new ``4*T*V`` tensor unless already fp32), pads labels
(int64, ``8*T``) and calls ``cross_entropy`` = ``log_softmax`` (``4*T*V``, saved) + ``nll_loss``.
Backward: nll gives a dense ``4*T*V`` gradient, log_softmax another ``4*T*V`` while the saved output lives.
Under autocast an fp32 lm_head is cast to bf16 for the matmul and that copy (``2*V*h``) is saved for backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..architecture import Architecture
from ..settings import TrainSettings
from .weights import float_bytes


@dataclass(frozen=True)
class LogitsMemory:
    forward_peak: int  # logits + fp32 upcast + saved log_softmax (+ labels)
    saved: int  # what survives to backward
    backward_peak: int  # saved + nll grad + log_softmax grad
    lm_head_cast: int  # autocast bf16 copy of an fp32 lm_head, saved for backward


def logits_memory(arch: Architecture, settings: TrainSettings) -> LogitsMemory:
    tv = settings.tokens * arch.vocab
    head_bytes = float_bytes(settings)
    logit_bytes = 2 if settings.autocast else head_bytes
    upcast = 4 * tv if logit_bytes != 4 else 0
    labels = 8 * settings.tokens
    saved = 4 * tv + labels
    lm_head_cast = 2 * arch.vocab * arch.hidden if settings.autocast and head_bytes == 4 else 0
    return LogitsMemory(
        forward_peak=logit_bytes * tv + upcast + saved,
        saved=saved,
        backward_peak=saved + 8 * tv,
        lm_head_cast=lm_head_cast,
    )
