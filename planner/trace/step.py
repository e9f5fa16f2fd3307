"""The training step of the GPU harness's manual loop (``planner/measure/recipe.py:run_manual``) on the fake
GPU: the same adapter (``attach_adapter``), optimizer (``make_optimizer``: the Trainer's own mapping of
``optim``), batches, autocast, loss, backward, clipping, ``step`` and ``zero_grad(set_to_none=True)``.

Four calls cannot run on fake tensors as they are, and are answered narrowly while the step runs:

- bitsandbytes' paged buffers (``functional.get_paged``: ``cudaMallocManaged`` wrapped as a CPU tensor,
  outside the caching allocator) become fake CUDA tensors born in the recorder's managed-memory scope,
  so they are counted in ``paged_bytes`` and never reach the stream; ``fill`` / ``prefetch_tensor`` on
  them (a kernel launch and ``cudaMemPrefetchAsync``) allocate nothing and are skipped.
- ``functional.create_dynamic_map`` (the 8-bit optimizer's and double quantization's code tables) builds
  its table with ``.tolist()``; it runs on real CPU tensors and the result is handed to the fake mode.
  bitsandbytes keeps the device copy in the module-level ``functional.name2qmap`` (1 KiB, made at the
  first double quantization); each trace starts with it empty, as a fresh process does.
- ``torch.utils.swap_tensors``, which ``nn.Module._apply`` uses for every FakeTensor parameter (peft's
  ``_move_adapter_to_device_of_base_layer``, ``cast_adapter_dtype``), refuses tensors with weak references,
  and FakeTensorMode's converter memo (``meta_utils.py:MetaConverter.tensor_memo``, a cache of converted
  inputs) holds some; the two tensors' memo entries are dropped before the swap.
- ``transformers.masking_utils.find_packed_sequence_indices`` cannot read fake position ids (it checks
  ``is_tracing``, true for any FakeTensor, and then keeps a packed-sequence mask, which turns SDPA's
  ``is_causal`` path into a materialized mask). The harness passes no ``position_ids``, so every row is one
  sequence 0..s-1, for which it returns ``None`` on the GPU; it returns ``None`` here.
"""

from __future__ import annotations

import contextlib
import tempfile
from unittest import mock

from planner.measure.recipe import make_optimizer, optimizer_step, training_arguments
from planner.inputs.settings import TrainSettings


@contextlib.contextmanager
def bnb_on_fake_gpu(recorder, fake_mode):
    """The two bitsandbytes answers of the module docstring, for the duration of a trace."""
    import bitsandbytes.functional as F
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    real_dynamic_map = F.create_dynamic_map

    def create_dynamic_map(*args, **kwargs):
        with unset_fake_temporarily():
            table = real_dynamic_map(*args, **kwargs)
        return fake_mode.from_tensor(table)

    def get_paged(*shape, dtype=torch.float32, device=None):
        with recorder.in_managed_memory():
            out = torch.empty(shape, dtype=dtype, device="cuda")
        out.is_paged = True
        out.page_deviceid = 0
        return out

    with mock.patch.object(F, "create_dynamic_map", create_dynamic_map), mock.patch.object(F, "get_paged", get_paged), \
            mock.patch.object(F, "fill", lambda *a, **k: None), mock.patch.object(F, "prefetch_tensor", lambda *a, **k: None), \
            mock.patch.dict(F.name2qmap, clear=True):
        yield


@contextlib.contextmanager
def swappable_fakes(fake_mode):
    """The third answer of the module docstring."""
    import torch

    real_swap = torch.utils.swap_tensors
    memo = fake_mode.fake_tensor_converter.meta_converter.tensor_memo

    def swap_tensors(t1, t2):
        for key in [key for key, value in memo.items() if value is t1 or value is t2]:
            del memo[key]
        return real_swap(t1, t2)

    with mock.patch.object(torch.utils, "swap_tensors", swap_tensors):
        yield


@contextlib.contextmanager
def one_sequence_per_row():
    """The fourth answer of the module docstring."""
    from transformers import masking_utils

    with mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None):
        yield


@contextlib.contextmanager
def cuda_autocast(settings: TrainSettings):
    """``torch.autocast("cuda", dtype=compute dtype)`` as the harness enters it (nothing when autocast is off)."""
    import torch

    if not settings.autocast:
        yield
        return
    dtype = torch.bfloat16 if settings.compute_dtype == "bf16" else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        yield


def optimizer_for(model, settings: TrainSettings, steps: int):
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(settings, steps, tmp, cuda=False)
    return make_optimizer(model, args)


def train(model, optimizer, settings: TrainSettings, recorder, steps: int, micro_batches: int | None = None) -> None:
    """``steps`` optimizer steps of ``micro_batches`` (default ``grad_accum``) micro-batches each, with phase
    marks, through the harness's own step (``planner.measure.recipe.optimizer_step``); the batch is built on
    the CPU and copied over, as the harness's ``random_batch(...).to(device)``."""
    import torch

    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    for _ in range(steps):
        optimizer_step(model, optimizer, params, settings, micro_batches or settings.grad_accum,
                       lambda: torch.zeros((settings.batch, settings.seq_len), dtype=torch.long).to("cuda"),
                       lambda: cuda_autocast(settings), recorder.mark)
