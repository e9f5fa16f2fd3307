"""Logits and cross-entropy: at 128k-256k vocabularies the largest activation term.

transformers 5 ``LlamaForCausalLM.forward`` makes logits in lm_head's output dtype (bf16 under autocast,
else the lm_head weight dtype: fp32 after ``prepare_model_for_kbit_training``); ``loss/loss_utils.py:
ForCausalLMLoss`` upcasts them with ``.float()`` (a new ``4*T*V`` tensor unless already fp32), pads labels
(int64, ``8*T``) and calls ``cross_entropy`` = ``log_softmax`` (``4*T*V``, saved) + ``nll_loss``.
Backward: nll gives a dense ``4*T*V`` gradient, log_softmax another ``4*T*V`` while the saved output lives.
Gemma-2 (``final_logit_softcapping``) caps the logits as ``tanh(logits / c) * c`` before the loss: ``tanh`` saves
its output (one more ``T*V`` tensor in the logits dtype, kept to backward), and the capped logits replace the raw ones.
Under autocast an lm_head whose dtype is not the autocast dtype (fp32 after ``prepare_model_for_kbit_training``,
or an fp16 checkpoint such as Llama-2 trained with bf16 compute) is cast for the matmul; autocast caches casts of
trainable leaves only, so this copy (``2*V*h``) is made per step and saved by ``mm`` for the input gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.inputs.architecture import Architecture
from planner.inputs.settings import TrainSettings
from planner.memory.weights import float_bytes


@dataclass(frozen=True)
class LogitsMemory:
    forward_peak: int  # logits + fp32 upcast + saved log_softmax (+ labels)
    saved: int  # what survives to backward
    backward_peak: int  # saved + nll grad + log_softmax grad
    lm_head_cast: int  # autocast copy of an lm_head not in the autocast dtype, saved for backward
    fp32_bytes: int  # one fp32 T*V tensor (the log_softmax output)


def logits_memory(arch: Architecture, settings: TrainSettings) -> LogitsMemory:
    tv = settings.tokens * arch.vocab
    head_bytes = float_bytes(settings)
    logit_bytes = 2 if settings.autocast else head_bytes
    upcast = 4 * tv if logit_bytes != 4 else 0
    labels = 8 * settings.tokens
    capped = logit_bytes * tv if arch.final_softcap else 0  # tanh's saved output
    saved = 4 * tv + labels + capped
    head_dtype = "float32" if head_bytes == 4 else arch.dtype
    lm_head_cast = 2 * arch.vocab * arch.hidden if settings.autocast and head_dtype != settings.compute_dtype_name else 0
    return LogitsMemory(
        forward_peak=logit_bytes * tv + upcast + saved,
        saved=saved,
        backward_peak=saved + 8 * tv,
        lm_head_cast=lm_head_cast,
        fp32_bytes=4 * tv,
    )
