"""Kernel twins: for ops whose CUDA kernel asks the caching allocator for more than its outputs, the same
requests in the same order (see ``recorder.py``). Each twin takes ``(recorder, func, args, kwargs)``.

- ``bitsandbytes::quantize_4bit`` and ``quantize_blockwise``: their CUDA kernels (``backends/cuda/ops.py``)
  allocate ``absmax`` before ``out`` but return ``(out, absmax)``; ``aten::native_dropout`` on CUDA
  allocates the mask before the output (``aten/src/ATen/native/cuda/Dropout.cu``; the H200 histories show
  it at every LoRA dropout); recorded in allocation order.
- ``bitsandbytes::gemm_4bit`` (``bitsandbytes/backends/cuda/ops.py``, the ``"cuda"`` kernel): more than
  1536 rows, or more than 512 on sm90 (``_gemm_4bit_use_custom_cuda`` never picks the fused kernel there
  past 512), take ``_dequant_linear_fallback``, mirrored line for line below so its locals die in the same
  order; 4 rows or fewer take the fused kernel, which allocates only its output.
- cuBLAS GEMMs (``mm``, ``addmm``, ``bmm``, ``baddbmm``, and ``linear``, which FakeTensorMode answers
  whole, as ``addmm``/``mm`` on the GPU): the first one on a thread makes that thread's
  cuBLAS handle, whose workspace comes from the caching allocator and is kept for the process
  (``aten/src/ATen/cuda/CublasHandlePool.cpp``, ``getChosenWorkspaceSize``: 4096 KiB x 8 on sm90;
  the autograd engine runs CUDA backward on its own device thread, so a training step makes two). An
  ``addmm`` (or ``linear``) with a 1-D bias goes through cublasLt (``Blas.cpp:addmm_out_cuda_impl``, ``gemm_and_bias``),
  whose own 1 MiB workspace (the default ``CUBLASLT_WORKSPACE_SIZE``) comes the same way, once per thread:
  the Qwen2.5 histories (attention biases) hold two more MiB than the others, at that place.
- Attention: a CPU build has no CUDA ``_fused_sdp_choice``, so ``scaled_dot_product_attention`` on fake
  CUDA tensors would take the math kernel. :func:`sdpa_as_on_h200` routes each call as an H200 with torch
  2.11 does (``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``: on sm90 with cuDNN 9
  ``check_prefer_cudnn_attention`` puts cuDNN attention first, then flash): after autocast's cast of q, k,
  v (``autocast_mode.cpp``, ``KERNEL_CUDA(scaled_dot_product_attention, lower_precision_fp)``; the
  wrapper's arguments are evaluated right to left, so v, k, q), to ``_scaled_dot_product_cudnn_attention``
  (fp16/bf16, no mask, head dim a multiple of 8 up to 128, grouped-query heads allowed) or
  ``_scaled_dot_product_flash_attention`` (head dim up to 256), as ``attention.cpp:scaled_dot_product_attention``
  calls them. The cuDNN twins make what the H200 histories show (``profiles/measurements/histories``, six
  models, every layer): forward: philox seed and offset (8 B each, on the device), the output, the
  logsumexp only when a gradient is wanted, a 256 B workspace freed at once; backward: dq, dk, dv, then a
  workspace of ``b*h*s*(8*d + 4) + 256`` bytes freed at once (all six models have grouped-query heads).
  The flash backward twin adds what flash-attention 2's ``mha_bwd`` (``flash_api.cpp``) allocates besides
  dq, dk, dv: ``softmax_d`` (fp32, sequence rounded up to 128), ``dq_accum`` (fp32, head dim rounded up to
  32) and, for grouped-query heads, full-head ``dk_expanded`` / ``dv_expanded``, freed on return.
"""

from __future__ import annotations

import contextlib
import threading
from unittest import mock

import torch

from planner.trace.errors import TraceUnavailable

CUBLAS_WORKSPACE_SM90 = 4096 * 1024 * 8
CUBLASLT_WORKSPACE = 1024 * 1024
CUDNN_FORWARD_WORKSPACE = 256
GEMM_4BIT_CUSTOM_MAX_M = 1536  # _gemm_4bit_custom_max_m on CUDA
GEMM_4BIT_SM90_FALLBACK_M = 512  # above this, sm90 always dequantizes
GEMM_4BIT_CUSTOM_FLOOR_M = 4  # _GEMM_4BIT_CUSTOM_FLOOR_M: at or below, always the fused kernel


class Twins:
    """The twin table of one trace (it holds the per-thread cuBLAS handles)."""

    def __init__(self):
        self._handles: set[tuple[str, int]] = set()
        aten = torch.ops.aten
        gemms = (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.linear.default)
        self.table = {op: self.cublas for op in gemms}
        self.table[torch.ops.bitsandbytes.gemm_4bit.default] = self.gemm_4bit
        self.table[torch.ops.bitsandbytes.quantize_4bit.default] = self.second_output_first
        self.table[torch.ops.bitsandbytes.quantize_blockwise.default] = self.second_output_first
        self.table[aten.native_dropout.default] = self.second_output_first  # (output, mask): the mask first
        self.table[aten._scaled_dot_product_flash_attention_backward.default] = self.flash_backward
        self.table[aten._scaled_dot_product_cudnn_attention.default] = self.cudnn_attention
        self.table[aten._scaled_dot_product_cudnn_attention_backward.default] = self.cudnn_backward

    def cublas(self, recorder, func, args, kwargs):
        out = func(*args, **kwargs)
        recorder.see(out)  # the output is allocated before the kernel asks for its handle
        thread = threading.get_ident()
        self._workspace(recorder, "cublas", thread, CUBLAS_WORKSPACE_SM90)
        bias = {torch.ops.aten.addmm.default: args[0], torch.ops.aten.linear.default: args[2] if len(args) > 2 else None}.get(func)
        if bias is not None and bias.dim() == 1:
            self._workspace(recorder, "cublaslt", thread, CUBLASLT_WORKSPACE)
        return out

    def _workspace(self, recorder, kind: str, thread: int, size: int) -> None:
        if (kind, thread) not in self._handles:
            self._handles.add((kind, thread))
            recorder.reserve_block(size, f"{kind}_workspace")

    def second_output_first(self, recorder, func, args, kwargs):
        """Ops returning ``(out, side)`` whose kernel allocates ``side`` (absmax, dropout mask) first."""
        out, side = func(*args, **kwargs)
        recorder.see(side)
        return out, side

    def gemm_4bit(self, recorder, func, args, kwargs):
        A, shapeB, blocksize = args[0], args[2], args[4]
        K = A.shape[-1]
        M = A.numel() // K
        if M > GEMM_4BIT_CUSTOM_MAX_M or K % blocksize != 0 or M > GEMM_4BIT_SM90_FALLBACK_M:
            with recorder:
                return _dequant_linear_fallback(*args, **kwargs)
        if M <= GEMM_4BIT_CUSTOM_FLOOR_M:
            return func(*args, **kwargs)
        raise TraceUnavailable(f"bitsandbytes picks its 4-bit GEMM kernel for {M} rows by a per-shape table; trace {GEMM_4BIT_SM90_FALLBACK_M + 1}+ tokens per micro-batch")


    def cudnn_attention(self, recorder, func, args, kwargs):
        query, compute_log_sumexp = args[0], args[4]
        with recorder:
            seed = torch.empty((), dtype=torch.int64, device=query.device)
            offset = torch.empty((), dtype=torch.int64, device=query.device)
        out = func(*args, **kwargs)
        recorder.see(out[0])
        if compute_log_sumexp:
            recorder.see(out[1])
            logsumexp = out[1]
        else:
            logsumexp = torch.empty(0, dtype=torch.float32, device=query.device)
        recorder.release_block(recorder.reserve_block(CUDNN_FORWARD_WORKSPACE, "cudnn_workspace"), CUDNN_FORWARD_WORKSPACE)
        return (out[0], logsumexp, *out[2:6], seed, offset, out[8])

    def cudnn_backward(self, recorder, func, args, kwargs):
        grads = func(*args, **kwargs)
        for grad in grads:
            recorder.see(grad)
        batch, heads, seq_q, head_dim = args[1].shape
        size = batch * heads * seq_q * (8 * head_dim + 4) + CUDNN_FORWARD_WORKSPACE
        recorder.release_block(recorder.reserve_block(size, "cudnn_workspace"), size)
        return grads

    def flash_backward(self, recorder, func, args, kwargs):
        grads = func(*args, **kwargs)
        for grad in grads:
            recorder.see(grad)
        query, key = args[1], args[2]
        batch, heads, seq_q, head_dim = query.shape
        kv_heads, seq_k = key.shape[1], key.shape[2]
        seq_rounded = -(-seq_q // 128) * 128
        head_rounded = -(-head_dim // 32) * 32 if head_dim <= 192 else 256
        scratch = [("softmax_d", batch * heads * seq_rounded * 4), ("dq_accum", batch * seq_rounded * heads * head_rounded * 4)]
        if kv_heads != heads:
            expanded = batch * seq_k * heads * head_dim * query.element_size()
            scratch += [("dk_expanded", expanded), ("dv_expanded", expanded)]
        blocks = [(recorder.reserve_block(size, name), size) for name, size in scratch]
        for addr, size in reversed(blocks):
            recorder.release_block(addr, size)
        return grads


@contextlib.contextmanager
def sdpa_as_on_h200(notes: list[str]):
    """``torch.nn.functional.scaled_dot_product_attention`` choosing cuDNN or flash attention where an H200
    does; other calls keep torch's function (the math kernel here) and leave a note."""
    original = torch.nn.functional.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
            value, key, query = (t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t for t in (value, key, query))
        head_dim, heads, kv_heads = query.shape[-1], query.shape[1], key.shape[1]
        fused = (attn_mask is None and query.dtype in (torch.float16, torch.bfloat16) and query.dim() == 4
                 and head_dim % 8 == 0 and value.shape[-1] == head_dim
                 and (heads == kv_heads or (enable_gqa and heads % kv_heads == 0)))
        if fused and head_dim <= 128:
            grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            return torch.ops.aten._scaled_dot_product_cudnn_attention(query, key, value, None, grad, dropout_p, is_causal, False, scale=scale)[0]
        if fused and head_dim <= 256:
            return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False, scale=scale)[0]
        note = f"attention traced with torch's math kernel ({query.dtype}, mask {attn_mask is not None}); an H200 may pick another"
        if note not in notes:
            notes.append(note)
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)

    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", sdpa):
        yield


def _dequant_linear_fallback(
    A, B, shapeB, absmax, blocksize, quant_type, bias=None, absmax_8bit=None, absmax_code=None, absmax_offset=None
):
    """``bitsandbytes/backends/cuda/ops.py:_dequant_linear_fallback`` with its two dequantize kernels
    (which write into the buffers given) left out."""
    if absmax_8bit is not None:
        absmax_dq = torch.empty_like(absmax_8bit, dtype=torch.float32)
        absmax = absmax_dq + absmax_offset
    B_dq = torch.empty(shapeB, dtype=A.dtype, device=A.device)
    return torch.nn.functional.linear(A, B_dq, bias)
