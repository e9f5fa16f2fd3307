"""Activations saved for backward, per decoder layer, and the gradient-checkpointing alternative.

Derived from the transformers 5 Llama modeling code (``modeling_llama.py``, ``integrations/sdpa_attention.py``),
peft 0.21 ``tuners/lora/bnb.py:Linear4bit.forward`` and autograd's saved tensors; the formulas were checked
exactly on the CPU with ``saved_tensors_hooks`` (shared/notes/qlora-memory-internals.md section 5) and are
checked on the GPU by ``qplan validate``. Notation: ``T = batch*seq`` tokens, ``h`` hidden, ``a = heads*head_dim``,
``k = kv_heads*head_dim``, ``I`` intermediate, ``r`` rank.

Dtypes that decide the bytes:
- stream ``p_s``: 4 after ``prepare_model_for_kbit_training`` (the fp32 embedding makes the residual stream
  fp32); also 4 under autocast to a dtype other than the checkpoint's (an fp16 Llama-2 trained with bf16
  compute): the first residual add is ``fp16 + bf16``, which type promotion makes fp32, and every layer after
  it sees an fp32 stream (seen on the GPU: ``planner.measure.saved``, profiles/measurements/saved-tensors-h200.json);
  else 2. Norms, MLP intermediates and 4-bit linear outputs follow it (``Linear4bit`` returns the input
  dtype).
- attention ``c_att``: 2 under autocast (SDPA and matmul are autocast ops), else ``p_s``.
- LoRA input ``p_l``: 2 under autocast, else 4 (peft casts x to the fp32 adapter dtype).

Per layer (no checkpointing), ``S_layer`` =
  norms      ``n_norms*(4Th + 4T)``                 fp32 input (or its fp32 copy) + rsqrt
  attention  ``c_att*T*(2a+2k) + 4*b*heads*s``      SDPA/flash: q, k, v, out + logsumexp
             eager instead: ``3*c_att*T*a + (4 [+2])*b*heads*s^2`` (q, repeated k/v, fp32 softmax [+ its
             16-bit copy])
  MLP        ``3*T*I*p_s``                           gate out, act out, up out
  LoRA input per targeted module: shared when its input already has the dtype lora_A needs, else a
             per-module cast (``p_l*T*in``); with dropout>0 always ``T*in*(p_l+1)`` (output + bool mask)
  LoRA B     ``p_l*T*r`` per targeted module
With gradient checkpointing only the layer input (``p_s*T*h``) is kept per layer; backward recomputes one
layer at a time, so one ``S_layer`` plus the backward working set is alive.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..architecture import Architecture
from ..settings import TrainSettings
from .trainable import targeted_linears

# Which tensor feeds each linear, so LoRA inputs that share a tensor are counted once.
_INPUT_GROUP = {
    "q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in",
    "o_proj": "attn_out",
    "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in",
    "down_proj": "mlp_act",
}


@dataclass(frozen=True)
class Dtypes:
    stream: int
    attention: int
    lora_input: int

    @classmethod
    def of(cls, settings: TrainSettings, arch: Architecture) -> "Dtypes":
        promoted = settings.autocast and arch.dtype != settings.compute_dtype_name
        stream = 4 if (settings.quantized and settings.prepare_kbit) or promoted else 2
        return cls(
            stream=stream,
            attention=2 if settings.autocast else stream,
            lora_input=2 if settings.autocast else 4,
        )


def attention_saved(arch: Architecture, settings: TrainSettings, dt: Dtypes) -> int:
    b, s, t = settings.batch, settings.seq_len, settings.tokens
    a, k = arch.attn_width, arch.kv_width
    if settings.attn == "eager":
        probs_copy = 2 if (settings.autocast or dt.stream == 2) else 0
        return 3 * dt.attention * t * a + (4 + probs_copy) * b * arch.heads * s * s
    return dt.attention * t * (2 * a + 2 * k) + 4 * b * arch.heads * s


def lora_saved(arch: Architecture, settings: TrainSettings, dt: Dtypes) -> int:
    """Inputs saved by lora_A (with sharing) and by lora_B, for one layer."""
    if settings.full_finetune:
        return 0
    t = settings.tokens
    input_dtype = {"attn_in": dt.stream, "attn_out": dt.attention, "mlp_in": dt.stream, "mlp_act": dt.stream}
    already_saved = {"attn_out"} if settings.attn != "eager" else set()
    shared: dict[str, int] = {}
    total = 0
    for lin in targeted_linears(arch, settings.targets):
        group = _INPUT_GROUP.get(lin.name, "attn_in")
        total += dt.lora_input * t * settings.rank * lin.count
        if settings.lora_dropout > 0:
            total += (dt.lora_input + 1) * t * lin.in_features * lin.count
        elif input_dtype[group] == dt.lora_input:
            if group not in already_saved:
                shared[group] = dt.lora_input * t * lin.in_features
        else:
            total += dt.lora_input * t * lin.in_features * lin.count
    return total + sum(shared.values())


def layer_saved(arch: Architecture, settings: TrainSettings) -> int:
    """``S_layer``: bytes one decoder layer saves for backward (formula in the module docstring)."""
    dt = Dtypes.of(settings, arch)
    t, h = settings.tokens, arch.hidden
    n_norms = 4 if arch.model_type == "gemma2" else 2
    norms = n_norms * (4 * t * h + 4 * t)
    if arch.model_type in ("qwen3", "qwen3_moe"):
        norms += 4 * t * (arch.attn_width + arch.kv_width) + 4 * t * (arch.heads + arch.kv_heads)
    if arch.expert_banks:  # routed tokens: top_k copies of gate/up/act outputs and gathered inputs [est]
        mlp = settings.tokens * arch.experts_per_token * (3 * arch.intermediate + 2 * h) * dt.stream
    else:
        mlp = 3 * t * arch.intermediate * dt.stream
    return norms + attention_saved(arch, settings, dt) + mlp + lora_saved(arch, settings, dt)


def checkpoint_saved(arch: Architecture, settings: TrainSettings) -> int:
    """With gradient checkpointing: the input of every layer, ``L * p_s * T * h``."""
    return arch.layers * Dtypes.of(settings, arch).stream * settings.tokens * arch.hidden


def outside_layers(arch: Architecture, settings: TrainSettings) -> int:
    """cos/sin shared by all layers (``2*T*head_dim*p_s``) and the final norm (``4Th + 4T``)."""
    t = settings.tokens
    return 2 * t * arch.head_dim * Dtypes.of(settings, arch).stream + 4 * t * arch.hidden + 4 * t


def backward_working_set(arch: Architecture, settings: TrainSettings) -> int:
    """Gradient buffers alive while one layer runs backward [estimate, checked against GPU peaks by ``qplan validate``]:
    the MLP's three ``T*I`` gradients in the stream dtype and the output/residual gradients ``2*T*h*p_s``."""
    p_s = Dtypes.of(settings, arch).stream
    t = settings.tokens
    return 3 * t * arch.intermediate * p_s + 2 * t * arch.hidden * p_s


def eager_transient(arch: Architecture, settings: TrainSettings) -> int:
    """Eager attention briefly holds fp32 scores, scaled scores and the masked copy: ``~8*b*heads*s^2`` [est]."""
    if settings.attn != "eager":
        return 0
    return 8 * settings.batch * arch.heads * settings.seq_len**2
