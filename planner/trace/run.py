"""One trace end to end: fake GPU, recorder, load, adapter, steps.

Python's cyclic garbage collector is paused while it runs, so that no storage dies at a time set by the
collector's allocation counters: the step leaves no cyclic garbage holding CUDA storages (``gc.collect()``
at every phase mark frees nothing), so pausing it changes no event, and two runs give the same stream.
"""

from __future__ import annotations

import gc

from planner.inputs.settings import TrainSettings
from planner.trace.errors import TraceUnavailable


def run(config: dict, settings: TrainSettings, steps: int, micro_batches: int | None = None):
    """Trace ``config`` as it is (all its layers) for ``steps`` steps of ``micro_batches`` (default
    ``grad_accum``) micro-batches; returns the recorder. Whatever stops the step on fake tensors comes out as
    one :class:`TraceUnavailable`."""
    from planner.trace.cuda import h200_runtime, install_fake_cuda

    install_fake_cuda()
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from planner.measure.recipe import attach_adapter
    from planner.trace.build import load_on_fake_gpu, meta_model
    from planner.trace.kernels import Twins, sdpa_as_on_h200
    from planner.trace.recorder import Recorder
    from planner.trace.step import bnb_on_fake_gpu, one_sequence_per_row, optimizer_for, swappable_fakes, train

    model, dtype, quantizer, device_map = meta_model(config, settings)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)  # the meta model is read (state_dict, shapes) under it
    recorder = Recorder(Twins().table)
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        with h200_runtime(lambda: recorder.allocated_rounded, recorder.empty_cache), fake_mode, recorder, bnb_on_fake_gpu(recorder, fake_mode), \
                swappable_fakes(fake_mode), sdpa_as_on_h200(recorder.notes), one_sequence_per_row():
            torch.empty(1, device="cuda")  # the worker's probe after torch.cuda.init() (planner/measure/worker.py)
            recorder.mark("load")
            load_on_fake_gpu(model, dtype, quantizer, device_map)
            recorder.mark("adapter")
            model = attach_adapter(model, settings)
            optimizer = optimizer_for(model, settings, steps)
            train(model, optimizer, settings, recorder, steps, micro_batches)
            recorder.close()
    except TraceUnavailable:
        raise
    except Exception as error:  # an op without a fake kernel, a data-dependent branch, a library's CUDA-only call
        detail = str(error).strip().splitlines()
        raise TraceUnavailable(f"{type(error).__name__}: {detail[0][:200] if detail else 'no message'}") from error
    finally:
        if collecting:
            gc.enable()
    return recorder
