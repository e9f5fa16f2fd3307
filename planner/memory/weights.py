"""Frozen base weights: the quantized linears, the modules left in 16/32-bit, and the dequantized
temporary a 4-bit matmul makes.

Sources (bitsandbytes 0.50.2, transformers 5.23, peft 0.21):
- ``bitsandbytes/functional.py:quantize_4bit``: packed weight ``ceil(n/2)`` bytes; absmax float32, one per
  block of 64; with double quantization (``compress_statistics``) absmax becomes uint8 plus one float32 per
  256 blocks, a float32 offset and a copied 256-entry float32 code (1 KiB); every layer also gets its own
  16-entry float32 NF4/FP4 code (64 B).
- ``bitsandbytes/nn/modules.py:Int8Params``: LLM.int8 keeps an int8 weight and one float32 scale (SCB) per
  output row.
- ``transformers/quantizers/base.py:get_keys_to_not_convert``: ``lm_head`` and everything that is not an
  ``nn.Linear`` (embeddings, norms, MoE expert banks) stay in the model dtype.
- ``peft/utils/other.py:prepare_model_for_kbit_training``: casts every fp16/bf16 parameter that is not a
  ``Params4bit`` to float32 (int8 weights are int8 already, so they stay).
- ``bitsandbytes/autograd/_functions.py:MatMul4Bit.backward``: the input gradient dequantizes the whole
  weight (plus float32 absmax temporaries) and frees it on return; one layer at a time
  (:func:`dequant_temp_bytes`).
"""

from __future__ import annotations

from math import ceil

from planner.inputs.architecture import Architecture
from planner.inputs.settings import TrainSettings

BLOCKSIZE_4BIT = 64
BLOCKSIZE_NESTED = 256
FP32 = 4
BF16 = 2
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def linear4bit_bytes(numel: int, double_quant: bool) -> int:
    """Bytes of one ``Linear4bit`` weight with its quant_state.

    no double quant: ``ceil(n/2) + 4*nb + 64``; double quant: ``ceil(n/2) + nb + 4*ceil(nb/256) + 4 + 64 + 1024``
    with ``nb = ceil(n/64)`` (bitsandbytes ``quantize_4bit``).
    """
    blocks = ceil(numel / BLOCKSIZE_4BIT)
    packed = ceil(numel / 2)
    if not double_quant:
        return packed + FP32 * blocks + 16 * FP32
    return packed + blocks + FP32 * ceil(blocks / BLOCKSIZE_NESTED) + FP32 + 16 * FP32 + 256 * FP32


def quant_state_bytes(arch: Architecture, settings: TrainSettings) -> int:
    """Bytes of every ``Linear4bit``'s quant_state (absmax, nested absmax, offset, codes): what
    :func:`linear4bit_bytes` counts beyond the packed weight. They are module attributes, not parameters, so
    FSDP and DeepSpeed leave them whole on every GPU (bitsandbytes ``fix_4bit_weight_quant_state_from_module``)."""
    if not (settings.quantized and settings.quant in ("nf4", "fp4")):
        return 0
    return sum(arch.layers * lin.count * (linear4bit_bytes(lin.weight_numel, settings.double_quant) - ceil(lin.weight_numel / 2))
               for lin in arch.linears)


def linear8bit_bytes(in_features: int, out_features: int) -> int:
    """LLM.int8: int8 weight ``out*in`` bytes plus a float32 row scale per output row (``Int8Params.SCB``)."""
    return in_features * out_features + FP32 * out_features


def float_bytes(settings: TrainSettings) -> int:
    """Bytes per element of the parameters left unquantized: float32 once ``prepare_model_for_kbit_training``
    ran on a quantized model, else the 16-bit model dtype."""
    return FP32 if settings.quantized and settings.prepare_kbit else BF16


def frozen_weight_components(arch: Architecture, settings: TrainSettings) -> dict[str, int]:
    """Resident bytes of the frozen base model, by component; none in a full fine-tune, where every weight is
    trainable and counted once, as the trainable weights (memory.trainable)."""
    if settings.full_finetune:
        return {}
    p_float = float_bytes(settings)
    linears = [(lin, arch.layers * lin.count) for lin in arch.linears]
    biases = arch.linear_bias_numel
    if settings.quant in ("nf4", "fp4") and settings.quantized:
        base = sum(n * linear4bit_bytes(lin.weight_numel, settings.double_quant) for lin, n in linears)
        base_name = f"{settings.quant.upper()} weights" + (" + double-quant constants" if settings.double_quant else " + absmax")
    elif settings.quant == "int8" and settings.quantized:
        base = sum(n * linear8bit_bytes(lin.in_features, lin.out_features) for lin, n in linears)
        base_name = "int8 weights + row scales"
    else:
        base = BF16 * arch.linear_weight_numel
        base_name = "16-bit linear weights"
    components = {
        base_name: base,
        "embeddings" + (" + tied lm_head" if arch.tied_embeddings else ""): p_float * arch.embedding_numel,
        "lm_head": p_float * arch.lm_head_numel,
        "norms, biases, router": p_float * (arch.norm_numel + biases + arch.layers * arch.router_numel),
        "MoE experts (not nn.Linear: left unquantized)": p_float * arch.expert_numel,
    }
    return {name: size for name, size in components.items() if size}


def dequant_temp_bytes(arch: Architecture, settings: TrainSettings) -> int:
    """Largest transient of a quantized matmul's backward, one layer at a time: the dequantized weight plus
    ``n/8`` bytes of absmax temporaries with double quantization (``n/16`` without).

    bitsandbytes 0.50.2 ``MatMul4Bit.backward``: ``dequantize_4bit(B, state).to(grad_output.dtype)``. The weight
    comes back in ``quant_state.dtype``, the dtype the model was loaded in, and is copied to the compute dtype
    when that differs (an fp16 checkpoint such as Llama-2 trained in bf16): ``n*(d + c)`` bytes then, else
    ``n*c``. Seen on the GPU: two 448 MiB blocks in Llama-2-70B's down_proj backward
    (profiles/measurements/timeline-h200.json). The forward's fused ``gemm_4bit`` makes no such copy."""
    if not settings.quantized:
        return 0
    numel = arch.largest_linear.weight_numel
    absmax_tmp = numel // 8 if settings.double_quant else numel // 16
    loaded = DTYPE_BYTES.get(arch.dtype, BF16)
    copied = settings.quant in ("nf4", "fp4") and arch.dtype != settings.compute_dtype_name
    return numel * (loaded + BF16 if copied else BF16) + absmax_tmp
