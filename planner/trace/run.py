"""One trace end to end: fake GPU, recorder, load, adapter, steps."""

from __future__ import annotations

from ..settings import TrainSettings
from .errors import TraceUnavailable


def run(config: dict, settings: TrainSettings, steps: int):
    from . import Trace
    from .cuda import h200_runtime, install_fake_cuda

    install_fake_cuda()
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ..measure.recipe import attach_adapter
    from .build import load_on_fake_gpu, meta_model
    from .kernels import Twins
    from .recorder import Recorder
    from .step import bnb_on_fake_gpu, optimizer_for, swappable_fakes, train

    model, dtype, quantizer, device_map = meta_model(config, settings)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)  # the meta model is read (state_dict, shapes) under it
    recorder = Recorder(Twins().table)
    with h200_runtime(lambda: recorder.allocated_rounded), fake_mode, recorder, \
            bnb_on_fake_gpu(recorder, fake_mode), swappable_fakes(fake_mode):
        recorder.mark("load")
        load_on_fake_gpu(model, dtype, quantizer, device_map)
        recorder.mark("adapter")
        model = attach_adapter(model, settings)
        optimizer = optimizer_for(model, settings, steps)
        train(model, optimizer, settings, recorder, steps)
    return Trace(events=recorder.events, allocated_peak_bytes=recorder.peak_rounded,
                 allocated_peak_unrounded_bytes=recorder.peak, phases=recorder.phases,
                 paged_bytes=recorder.managed_bytes)
