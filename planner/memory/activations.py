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
layer at a time (``S_rec = S_layer - p_s*T*h``, its input being the checkpoint) and peaks at one of the moments
of :func:`layer_backward_moments`, read off the GPU allocator's history (``planner.measure.timeline``).
Besides the layers: the KV cache of a forward without checkpointing, the final norm's output, and the
sliding-window mask.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.inputs.architecture import Architecture
from planner.inputs.settings import TrainSettings
from planner.memory.trainable import targeted_linears

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
        softcap = dt.attention * b * arch.heads * s * s if arch.softcap else 0  # tanh saves its output
        return 3 * dt.attention * t * a + (4 + probs_copy) * b * arch.heads * s * s + softcap
    masked = window_mask(arch, settings) != 0  # SDPA with an explicit mask: no enable_gqa, a float bias
    repeats = 2 * dt.attention * t * a if masked and arch.kv_heads < arch.heads else 0
    bias = dt.attention * b * s * s if masked else 0
    return dt.attention * t * (2 * a + 2 * k) + 4 * b * arch.heads * s + repeats + bias


def window_mask(arch: Architecture, settings: TrainSettings) -> int:
    """The bool mask ``b*s^2`` a sliding-window model builds once per forward when the sequence outgrows its
    window (transformers ``create_sliding_window_causal_mask``); shorter sequences use SDPA's ``is_causal``.
    With a mask, transformers' ``use_gqa_in_sdpa`` is false, so ``repeat_kv`` widens k and v to ``a``, and SDPA
    saves the mask as a float bias in the query dtype; each layer saves both (``attention_saved``). Seen on the
    GPU: Mistral-7B at s=8192 (profiles/measurements/timeline-h200.json)."""
    window = arch.sliding_window
    if settings.attn != "sdpa" or window is None or settings.seq_len <= window:
        return 0
    return settings.batch * settings.seq_len**2


def lora_saved_by_group(arch: Architecture, settings: TrainSettings, dt: Dtypes) -> dict[str, int]:
    """Inputs saved by lora_A (with sharing) and by lora_B for one layer, by the tensor that feeds them
    (``attn_in``, ``attn_out``, ``mlp_in``, ``mlp_act``)."""
    groups: dict[str, int] = {}
    if settings.full_finetune:
        return groups
    t = settings.tokens
    input_dtype = {"attn_in": dt.stream, "attn_out": dt.attention, "mlp_in": dt.stream, "mlp_act": dt.stream}
    already_saved = {"attn_out"} if settings.attn != "eager" else set()
    shared: dict[str, int] = {}
    for lin in targeted_linears(arch, settings.targets):
        group = _INPUT_GROUP.get(lin.name, "attn_in")
        size = dt.lora_input * t * settings.rank * lin.count
        if settings.lora_dropout > 0:
            size += (dt.lora_input + 1) * t * lin.in_features * lin.count
        elif input_dtype[group] == dt.lora_input:
            if group not in already_saved:
                shared[group] = dt.lora_input * t * lin.in_features
        else:
            size += dt.lora_input * t * lin.in_features * lin.count
        groups[group] = groups.get(group, 0) + size
    for group, size in shared.items():
        groups[group] = groups.get(group, 0) + size
    return groups


def lora_saved(arch: Architecture, settings: TrainSettings, dt: Dtypes) -> int:
    """Inputs saved by lora_A (with sharing) and by lora_B, for one layer."""
    return sum(lora_saved_by_group(arch, settings, dt).values())


def layer_saved(arch: Architecture, settings: TrainSettings) -> int:
    """``S_layer``: bytes one decoder layer saves for backward (formula in the module docstring)."""
    dt = Dtypes.of(settings, arch)
    t, h = settings.tokens, arch.hidden
    norms = arch.layer_norms * (4 * t * h + 4 * t)
    if arch.qk_norm:
        norms += 4 * t * (arch.attn_width + arch.kv_width) + 4 * t * (arch.heads + arch.kv_heads)
    if arch.expert_banks:  # routed tokens: top_k copies of gate/up/act outputs and gathered inputs [est]
        mlp = settings.tokens * arch.experts_per_token * (3 * arch.intermediate + 2 * h) * dt.stream
    else:
        mlp = 3 * t * arch.intermediate * dt.stream
    return norms + attention_saved(arch, settings, dt) + mlp + lora_saved(arch, settings, dt)


def checkpoint_saved(arch: Architecture, settings: TrainSettings) -> int:
    """With gradient checkpointing: the input of every layer, ``L * p_s * T * h``."""
    return arch.layers * Dtypes.of(settings, arch).stream * settings.tokens * arch.hidden


def shared_inputs(arch: Architecture, settings: TrainSettings) -> int:
    """Made once per forward and read by every layer: cos/sin ``2*T*head_dim*p_s`` and the sliding-window
    mask (:func:`window_mask`)."""
    rope = arch.rope_tables * 2 * settings.tokens * arch.head_dim * Dtypes.of(settings, arch).stream
    return rope + window_mask(arch, settings)


def final_norm_saved(arch: Architecture, settings: TrainSettings) -> int:
    """The final norm's saved fp32 input and rsqrt, ``4Th + 4T``, alive until its backward runs."""
    return 4 * settings.tokens * arch.hidden + 4 * settings.tokens


def final_norm_output(arch: Architecture, settings: TrainSettings) -> int:
    """The final norm's output ``T*h*p_s``: lm_head saves only its weight's bf16 copy, but the output is held
    by the model's ``last_hidden_state`` until the forward (and loss) returns. Forward only."""
    return settings.tokens * arch.hidden * Dtypes.of(settings, arch).stream


def kv_cache(arch: Architecture, settings: TrainSettings) -> int:
    """The KV cache a training forward builds when ``config.use_cache`` is true and checkpointing is off:
    ``L * 2 * T * k * p_s``. transformers' ``merge_with_config_defaults`` turns ``use_cache`` off only under
    gradient checkpointing, so the model makes a ``DynamicCache`` whose ``update`` stores ``torch.cat`` copies
    of every layer's rotated keys and its values (``cache_utils.py``), in the stream dtype (``Linear4bit``
    returns its input's dtype and the rotary cos/sin take it too; checked on the CPU by
    tests/test_activations.py). SDPA saves its own bf16 casts, so the cache is extra. It lives in the model
    output, which the Trainer (``compute_loss``) and qplan's harness drop before ``backward``: a forward-only
    term. ``model.config.use_cache = False`` removes it."""
    if settings.gradient_checkpointing or not arch.use_cache:
        return 0
    return arch.layers * 2 * settings.tokens * arch.kv_width * Dtypes.of(settings, arch).stream


def recomputed_layer(arch: Architecture, settings: TrainSettings) -> int:
    """``S_rec``: what one checkpointed layer's recompute saves, ``S_layer - T*h*p_s``: the input norm's saved
    input is the checkpoint itself, already kept. 0 without checkpointing."""
    if not settings.gradient_checkpointing:
        return 0
    return layer_saved(arch, settings) - settings.tokens * arch.hidden * Dtypes.of(settings, arch).stream


def eager_forward(arch: Architecture, settings: TrainSettings) -> int:
    """Eager attention's forward peak inside one layer, at the fp32 softmax: its input and output
    (``8*b*heads*s^2``), the fp32 additive mask ``4*b*s^2``, and the layer's normed input, q, k and v in the
    stream dtype with ``repeat_kv``'s copies of k and v for grouped-query attention (transformers 5
    ``eager_attention_forward``; GPU timeline: profiles/measurements/timeline-h200.json). 0 for SDPA."""
    if settings.attn != "eager":
        return 0
    b, s, t, p = settings.batch, settings.seq_len, settings.tokens, Dtypes.of(settings, arch).stream
    repeats = 2 * t * arch.attn_width * p if arch.kv_heads < arch.heads else 0
    return (8 * b * arch.heads * s * s + 4 * b * s * s
            + p * t * (arch.hidden + arch.attn_width + 2 * arch.kv_width) + repeats)


# Names of the transient, one-layer-at-a-time parts of a phase (components of planner.memory.estimate).
RECOMPUTED = "recomputed layer activations"
WORKING = "backward working set"
DEQUANT = "dequantized weight (transient)"
EAGER = "eager attention scores (transient)"
FINAL_NORM_OUTPUT = "final norm output"


def layer_backward_moments(arch: Architecture, settings: TrainSettings, recomputed: int,
                           dequant: int) -> dict[str, dict[str, int]]:
    """What one layer's backward adds at its candidate peaks, beyond the kept checkpoints; the largest wins.
    ``recomputed`` is :func:`recomputed_layer`, ``dequant`` the dequantized-weight transient.

    Read off the caching allocator's history of real micro-steps (``planner.measure.timeline``,
    profiles/measurements/timeline-h200.json), with ``p = p_s``, ``x = T*h*p`` (the MLP input, and equally the
    gradient arriving at the layer output) and ``m = T*I*p`` (one MLP intermediate):

    - ``recompute reaches down_proj`` (checkpointing): the recompute has saved all of ``S_rec``; alive besides
      are the MLP input, the incoming gradient and the gate*up product, then the larger of down_proj's base
      forward (its input cast to the compute dtype ``2*T*I`` and output ``2*T*h``) and its LoRA branch (peft's
      ``result.clone()``, ``x``, plus the fp32 dropout output ``m`` before lora_A's autocast copy, or lora_B's
      output and its scaled copy);
    - ``down_proj backward``: down_proj's LoRA inputs are freed; alive are the incoming gradient, its cast to
      the compute dtype ``2*T*h``, the LoRA branch's input gradient ``m``, then the larger of the dequantized
      weight (``dequant``) with the ``2*T*I`` input gradient and that gradient's cast back ``2*T*I + m``;
    - ``eager attention backward``: the MLP's tensors are freed; alive are the attention's LoRA inputs, the bf16
      q and repeated k the score matmul saved, the fp32 mask, four gradients of size ``x`` and softmax's saved
      output with three score-sized gradients: ``16*b*heads*s^2``.
    Without checkpointing every layer's ``S_layer`` is kept already and only ``down_proj backward`` applies.
    With a bf16 stream the gradient needs no cast back and is summed into the LoRA branch's in place.
    """
    dt = Dtypes.of(settings, arch)
    t, p = settings.tokens, dt.stream
    x, m = t * arch.hidden * p, t * arch.intermediate * p
    lora = lora_saved_by_group(arch, settings, dt)
    down_inputs = lora.get("mlp_act", 0)
    lora_on_down = "mlp_act" in lora
    base = x + 2 * t * arch.hidden + (m if lora_on_down else 0)
    grad_cast_back = m if p != 2 else 0
    if dequant >= grad_cast_back:
        down_backward = {WORKING: base + 2 * t * arch.intermediate, DEQUANT: dequant}
    else:
        down_backward = {WORKING: base + 2 * t * arch.intermediate + grad_cast_back}
    moments = {"down_proj backward": {RECOMPUTED: recomputed - down_inputs if recomputed else 0, **down_backward}}
    if not settings.gradient_checkpointing:
        return moments
    cast_in = 2 * t * arch.intermediate if p != 2 else 0
    dropout_out = m if settings.lora_dropout > 0 and p != dt.lora_input else 0
    lora_out = 2 * t * arch.hidden * (2 if settings.autocast else dt.lora_input)
    branch = x + max(dropout_out, lora_out) if lora_on_down else 0
    moments["recompute reaches down_proj"] = {
        RECOMPUTED: recomputed,
        WORKING: 2 * x + m + max(cast_in + 2 * t * arch.hidden, branch),
    }
    if settings.attn == "eager":
        b, s = settings.batch, settings.seq_len
        moments["eager attention backward"] = {
            RECOMPUTED: lora.get("attn_in", 0) + 2 * dt.attention * t * arch.attn_width + 4 * b * s * s,
            WORKING: 4 * x,
            EAGER: 16 * b * arch.heads * s * s,
        }
    return moments
