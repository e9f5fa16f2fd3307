"""The real QLoRA training step (transformers + peft + bitsandbytes + torch) run on fake CUDA tensors on the
CPU, recording the exact stream of caching-allocator requests a GPU would see (``recorder.py``). Large
models are traced with 2 and 3 layers (and 2 and 3 micro-batches) and extended (``extrapolate.py``).
torch is imported only when a trace is asked for."""

from __future__ import annotations

from pydantic import BaseModel, Field, PrivateAttr

from planner.inputs.settings import TrainSettings
from planner.trace.errors import TraceUnavailable

__all__ = ["Trace", "TraceUnavailable", "trace_in_this_process", "trace_many", "trace_step"]

FEW_LAYERS = 2  # traced layer counts when extending: FEW_LAYERS and FEW_LAYERS + 1
FEW_MICRO_BATCHES = 2


class Trace(BaseModel):
    """One traced run: load, adapter, then ``steps`` optimizer steps of ``grad_accum`` micro-batches."""

    events: list[dict] = Field(repr=False, description="the caching-allocator requests in order (empty when extended)")
    allocated_peak_bytes: int = Field(description="max over the stream of the live bytes, each request rounded up to 512 B "
                                      "(torch's allocated_bytes counts blocks; the allocator's unsplit remainders not included)")
    allocated_peak_unrounded_bytes: int
    requests: int = Field(description="allocations in the stream")
    phases: list[dict] = Field(description="name, start and end event index (full traces), allocated_at_start and "
                               "peak_rounded bytes in the phase")
    paged_bytes: int = Field(description="bitsandbytes paged optimizer state (managed memory, not in the stream)")
    traced: str = Field(description="what ran: 'full', or the layer and micro-batch counts extended from")
    notes: list[str] = []
    _stream: list[tuple] = PrivateAttr(default_factory=list)

    @property
    def stream(self) -> list[tuple]:
        """The request stream as tokens (``extrapolate.tokens``): sizes and ops in order, without addrs;
        full and extended traces alike."""
        return self._stream


def trace_step(config: dict, settings: TrainSettings, steps: int = 2, full: bool = False) -> Trace:
    """Trace loading ``config`` (a ``config.json`` dict), attaching the adapter and ``steps`` optimizer steps
    (the second is the steady state: optimizer state exists). ``full`` traces every layer and micro-batch and
    keeps the event stream; otherwise models deeper than ``FEW_LAYERS + 1`` layers (or with more micro-batches)
    are extended from small traces, which gives the same peaks and requests (``extrapolate.py``)."""
    return trace_many(config, [settings], steps, full)[0]


def trace_many(config: dict, many: list[TrainSettings], steps: int = 2, full: bool = False) -> list[Trace]:
    """:func:`trace_step` for each settings, all in one fresh child process (``child.py``): the fake CUDA
    device a trace installs (``cuda.py``) must never enter the caller's process (a training run's, say), and
    the autograd engine of a process that already ran a backward pass has sized its device queues without it.
    One child pays torch's and transformers' import once for all of them."""
    import pickle
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "planner.trace.child"],
                          input=pickle.dumps((config, list(many), steps, full)), capture_output=True, check=False)
    try:
        status, value = pickle.loads(done.stdout)
    except Exception:  # the child died (killed, out of memory, a crash in the fake device)
        last = done.stderr.decode(errors="replace").strip().splitlines()
        raise TraceUnavailable(f"the trace process ended with code {done.returncode}: {last[-1] if last else 'no output'}") from None
    if status != "ok":
        raise TraceUnavailable(value)
    return value


def trace_in_this_process(config: dict, settings: TrainSettings, steps: int = 2, full: bool = False) -> Trace:
    """:func:`trace_step` in the calling process, which must be one whose autograd engine has not run yet."""
    from planner.trace.run import run

    layers = _layers(config)
    micro = settings.grad_accum
    if full or (layers <= FEW_LAYERS + 1 and micro <= FEW_MICRO_BATCHES + 1):
        from planner.trace.extrapolate import tokens

        recorder = run(config, settings, steps)
        trace = Trace(events=recorder.events, allocated_peak_bytes=recorder.peak_rounded,
                      allocated_peak_unrounded_bytes=recorder.peak, requests=recorder.requests,
                      phases=recorder.phases, paged_bytes=recorder.managed_bytes, traced="full", notes=recorder.notes)
        trace._stream = tokens(recorder.events, recorder.phases)
        return trace
    return _extended(config, settings, steps, layers, micro)


def _layers(config: dict) -> int:
    layers = config.get("num_hidden_layers") or config.get("text_config", {}).get("num_hidden_layers")
    if not layers:
        raise TraceUnavailable("config.json has no num_hidden_layers")
    return int(layers)


def _extended(config: dict, settings: TrainSettings, steps: int, layers: int, micro: int) -> Trace:
    from planner.trace.extrapolate import extrapolate, summary, tokens
    from planner.trace.run import run

    few_layers = min(layers, FEW_LAYERS)
    few_micro = min(micro, FEW_MICRO_BATCHES)
    streams, paged, notes = {}, {}, []
    for n in {few_layers, min(layers, few_layers + 1)}:
        for g in {few_micro, min(micro, few_micro + 1)}:
            recorder = run(dict(config, num_hidden_layers=n), settings, steps, micro_batches=g)
            streams[n, g], paged[n] = tokens(recorder.events, recorder.phases), recorder.managed_bytes
            notes += [note for note in recorder.notes if note not in notes]
    by_micro = {}
    for g in {few_micro, min(micro, few_micro + 1)}:
        short, long = streams[few_layers, g], streams[min(layers, few_layers + 1), g]
        by_micro[g] = extrapolate(short, long, layers - few_layers) if layers > few_layers else short
    stream = by_micro[few_micro]
    if micro > few_micro:
        stream = extrapolate(by_micro[few_micro], by_micro[few_micro + 1], micro - few_micro)
    stats = summary(stream)
    growth = paged.get(few_layers + 1, paged[few_layers]) - paged[few_layers]
    trace = Trace(events=[], allocated_peak_bytes=stats["allocated_peak_bytes"],
                  allocated_peak_unrounded_bytes=stats["allocated_peak_unrounded_bytes"], requests=stats["requests"],
                  phases=stats["phases"], paged_bytes=paged[few_layers] + (layers - few_layers) * growth,
                  traced=f"extended from {sorted({n for n, _ in streams})} layers x {sorted({g for _, g in streams})} micro-batches",
                  notes=notes + ["extended from small traces: peaks and requests exact, no event stream (trace with full=True for it)"])
    trace._stream = stream
    return trace
