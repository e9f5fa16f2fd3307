"""A fake CUDA device on a CPU-only torch: what FakeTensorMode needs to run a training step on "cuda".

FakeTensorMode makes tensors that say ``device="cuda"`` and carry CUDA's dispatch keys (so CUDA autocast
applies), but autograd and a few Python helpers still ask the CUDA runtime questions a CPU build cannot
answer. Two layers answer them:

- C++ (``fake_cuda.cpp``, compiled here once per torch version with the system's C++ compiler and loaded
  into the process): a CUDA ``DeviceGuardImpl`` and CUDA hooks that say CUDA is built, which the autograd
  engine needs for device streams (``torch/csrc/autograd/input_buffer.cpp:InputBuffer::add``);
- dispatcher routes: ops with a CPU kernel and a ``CompositeImplicitAutograd`` fallback (``silu_backward``,
  ``mish_backward``, ``native_channel_shuffle``) have a CUDA kernel on a CUDA build, but here the fallback
  would run on fake CUDA tensors before any dispatch mode sees the op (``silu_backward`` as sigmoid, mul,
  add, mul: four temporaries the fused kernel never makes). Each gets a CUDA kernel that is never called
  (FakeTensorMode answers the op from its meta kernel), so the op reaches the recorder whole;
- Python (:func:`h200_runtime`, for the duration of a trace): the queries the recipe's libraries make,
  answered as one idle H200 (torch 2.11, CUDA 12.x) would — autocast's availability check
  (``torch/amp/autocast_mode.py:autocast.__init__``), ``torch.cuda.mem_get_info`` and the memory stats for
  ``transformers.modeling_utils.caching_allocator_warmup``, and the RNG state that
  ``torch/utils/checkpoint.py:get_device_states`` stashes (a CPU tensor on a real GPU: no device memory).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path
from unittest import mock

from planner.trace.errors import TraceUnavailable

H200_TOTAL_BYTES = 150_000_000_000  # about what torch.cuda.mem_get_info()[1] gives on an H200 (141 GB card);
# it only caps caching_allocator_warmup, for models over ~138 GiB
H200_CAPABILITY = (9, 0)
H200_SMS = 132

_SOURCE = Path(__file__).with_name("fake_cuda.cpp")
_loaded = False


def _library_path(torch) -> Path:
    digest = hashlib.sha256(_SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qplan"
    return cache / f"fake_cuda-{digest}.so"


def install_fake_cuda() -> None:
    """Compile (once) and load the fake CUDA device; :class:`TraceUnavailable` when it cannot be had."""
    global _loaded
    if _loaded:
        return
    import ctypes

    import torch

    if torch.backends.cuda.is_built():
        raise TraceUnavailable("the trace runs on a CPU-only torch build (this torch is built with CUDA)")
    library = _library_path(torch)
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        root = Path(torch.__file__).parent
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        command = [os.environ.get("CXX", "c++"), "-O1", "-shared", "-fPIC", "-std=c++17", f"-I{root / 'include'}",
                   str(_SOURCE), f"-L{root / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{root / 'lib'}", "-o", str(partial)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            raise TraceUnavailable(f"cannot compile the fake CUDA device ({detail.strip().splitlines()[-1] if detail.strip() else error})") from None
        partial.replace(library)
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    _route_fused_kernels(torch)
    _loaded = True


_routes = None  # the torch.library.Library holding the CUDA kernels of _route_fused_kernels (kept alive)


def _route_fused_kernels(torch) -> None:
    global _routes

    def never_called(*args, **kwargs):
        raise TraceUnavailable("a CUDA kernel was called on real tensors")

    _routes = torch.library.Library("aten", "IMPL")
    for name in torch._C._dispatch_get_all_op_names():
        if name.startswith("aten::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU") \
                and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeImplicitAutograd"):
            _routes.impl(name.removeprefix("aten::"), never_called, "CUDA")


class _DeviceProperties:
    """What ``torch.cuda.get_device_properties`` says on an H200 (the fields the recipe reads)."""

    name = "NVIDIA H200"
    major, minor = H200_CAPABILITY
    multi_processor_count = H200_SMS
    total_memory = H200_TOTAL_BYTES


SMALL_SEGMENT = 2 << 20  # kSmallBuffer: the caching allocator's segment for requests up to 1 MiB


@contextlib.contextmanager
def h200_runtime(allocated, empty_cache=lambda: None):
    """Answer the CUDA runtime queries of the recipe as one H200 would; ``allocated()`` gives the bytes the
    trace holds now (``torch.cuda.memory_allocated``). The one query of ``memory_reserved`` comes from
    ``caching_allocator_warmup``, when the only request so far is the harness's 4-byte probe
    (``planner/measure/worker.py``): the allocator then holds that probe's 2 MiB small segment."""
    import torch

    answers = {
        "torch.cuda.amp.common.amp_definitely_not_available": lambda: False,
        "torch.cuda.is_bf16_supported": lambda *a, **k: True,
        "torch.cuda.mem_get_info": lambda *a: (H200_TOTAL_BYTES - allocated(), H200_TOTAL_BYTES),
        "torch.cuda.memory_allocated": lambda *a: allocated(),
        "torch.cuda.memory_reserved": lambda *a: allocated() + SMALL_SEGMENT,
        "torch.cuda.current_device": lambda: 0,
        "torch.cuda.device_count": lambda: 1,
        "torch.cuda.get_device_properties": lambda *a: _DeviceProperties(),
        "torch.cuda.get_device_capability": lambda *a: H200_CAPABILITY,
        "torch.cuda.get_rng_state": lambda *a: torch.get_rng_state(),
        "torch.cuda.set_rng_state": lambda *a: None,
        "torch.cuda.empty_cache": empty_cache,
        "torch.cuda.synchronize": lambda *a: None,
    }
    with contextlib.ExitStack() as stack:
        for target, answer in answers.items():
            stack.enter_context(mock.patch(target, answer))
        stack.enter_context(mock.patch.object(torch.cuda, "device", _NoDevice))
        yield


class _NoDevice(contextlib.nullcontext):
    """``torch.cuda.device(i)``: one device, nothing to switch."""

    def __init__(self, *args, **kwargs):
        super().__init__()
