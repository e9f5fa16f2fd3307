"""Kernel twins: for ops whose CUDA kernel asks the caching allocator for more than its outputs, the same
requests in the same order (see ``recorder.py``). Each twin takes ``(recorder, func, args, kwargs)``.

- ``bitsandbytes::gemm_4bit`` (``bitsandbytes/backends/cuda/ops.py``, the ``"cuda"`` kernel): more than
  1536 rows, or more than 512 on sm90 (``_gemm_4bit_use_custom_cuda`` never picks the fused kernel there
  past 512), take ``_dequant_linear_fallback``, mirrored line for line below so its locals die in the same
  order; 4 rows or fewer take the fused kernel, which allocates only its output.
- cuBLAS GEMMs (``mm``, ``addmm``, ``bmm``, ``baddbmm``): the first one on a thread makes that thread's
  cuBLAS handle, whose workspace comes from the caching allocator and is kept for the process
  (``aten/src/ATen/cuda/CublasHandlePool.cpp``, ``getChosenWorkspaceSize``: 4096 KiB x 8 on sm90;
  cublasLt shares it). The autograd engine runs CUDA backward on its own device thread, so a training
  step makes two.
"""

from __future__ import annotations

import threading

import torch

from .errors import TraceUnavailable

CUBLAS_WORKSPACE_SM90 = 4096 * 1024 * 8
GEMM_4BIT_CUSTOM_MAX_M = 1536  # _gemm_4bit_custom_max_m on CUDA
GEMM_4BIT_SM90_FALLBACK_M = 512  # above this, sm90 always dequantizes
GEMM_4BIT_CUSTOM_FLOOR_M = 4  # _GEMM_4BIT_CUSTOM_FLOOR_M: at or below, always the fused kernel


class Twins:
    """The twin table of one trace (it holds the per-thread cuBLAS handles)."""

    def __init__(self):
        self._handles: set[int] = set()
        aten = torch.ops.aten
        self.table = {op: self.cublas for op in (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default)}
        self.table[torch.ops.bitsandbytes.gemm_4bit.default] = self.gemm_4bit

    def cublas(self, recorder, func, args, kwargs):
        out = func(*args, **kwargs)
        thread = threading.get_ident()
        if thread not in self._handles:
            recorder.see(out)  # the output is allocated before the kernel asks for its handle
            self._handles.add(thread)
            recorder.reserve_block(CUBLAS_WORKSPACE_SM90, "cublas_workspace")
        return out

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
