"""The real QLoRA training step (transformers + peft + bitsandbytes + torch) run on fake CUDA tensors on the
CPU, recording the exact stream of caching-allocator requests a GPU would see. torch is imported only
when a trace is asked for."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..settings import TrainSettings
from .errors import TraceUnavailable

__all__ = ["Trace", "TraceUnavailable", "trace_step"]


class Trace(BaseModel):
    """One traced run: load, adapter, then ``steps`` optimizer steps."""

    events: list[dict] = Field(repr=False)
    allocated_peak_bytes: int = Field(description="max over the stream of the live bytes, each request rounded up to 512 B "
                                      "(torch.cuda.max_memory_allocated without the allocator's unsplit remainders)")
    allocated_peak_unrounded_bytes: int
    phases: list[dict] = Field(description="name, start/end event index, peak_rounded inside the phase")
    paged_bytes: int = Field(description="bitsandbytes paged optimizer state (managed memory, not in the stream)")
    notes: list[str] = []


def trace_step(config: dict, settings: TrainSettings, steps: int = 1) -> Trace:
    """Trace loading ``config`` (a ``config.json`` dict), attaching the adapter and ``steps`` optimizer steps."""
    from .run import run

    return run(config, settings, steps)
