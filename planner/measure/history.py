"""The caching allocator's whole history of one measured run (``qplan measure --history-dir DIR``; the worker's
``--history PATH``), for replaying it in an allocator simulator.

:func:`start` turns on ``torch.cuda.memory._record_memory_history(enabled="all", context=None)`` right after
CUDA is initialised, before the process's first CUDA allocation, so the trace holds every alloc, free and
segment event of the run from an empty allocator. It also wraps ``torch.cuda.empty_cache``,
``reset_peak_memory_stats`` and ``set_per_process_memory_fraction``: each call, by the harness or a library,
is listed with the allocator's running alloc/free counts, so :func:`dump` can place it in the trace exactly.
The measuring path itself calls no ``empty_cache`` on one GPU (only FSDP's ``Run.shard`` does, and history
is single-GPU); ``reset_peak_memory_stats`` runs at every phase start (``PhaseTracker.enter``) and changes no
allocator state, and the wrapper keeps the peaks it would discard, so the sidecar's peaks cover the whole run.

:func:`dump` writes ``PATH`` (``<scenario>.pickle.gz``: ``torch.cuda.memory._dump_snapshot``, gzipped) and a
sidecar ``<scenario>.json`` (:class:`HistorySidecar`), also after an OOM."""

from __future__ import annotations

import datetime
import gzip
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

from ..results import Measurement
from ..settings import ALLOC_CONF, TrainSettings

MAX_ENTRIES = 5_000_000
WRAPPED = ("empty_cache", "reset_peak_memory_stats", "set_per_process_memory_fraction")


class HarnessCall(BaseModel):
    call: str = Field(description="empty_cache, reset_peak_memory_stats or set_per_process_memory_fraction")
    events_before: int | None = Field(None, description="trace entries recorded before the call (filled by dump)")
    allocs_before: int = Field(description="allocation.all.allocated when called: alloc events before it")
    frees_before: int = Field(description="allocation.all.freed when called")
    time_us: int = Field(description="wall clock, microseconds since the epoch (the trace's time_us clock)")
    caller: str
    value: float | None = Field(None, description="the fraction, for set_per_process_memory_fraction")
    peak_allocated: int | None = Field(None, description="allocated_bytes.all.peak just before a peak reset")
    peak_reserved: int | None = None
    peak_requested: int | None = None


class HistorySidecar(BaseModel):
    scenario: str
    model: str
    settings: TrainSettings
    status: str
    oom_phase: str | None = None
    alloc_conf: str | None = Field(description="PYTORCH_CUDA_ALLOC_CONF of the process; None: the default allocator")
    max_memory_allocated: int = Field(description="whole run: max of every peak the phase resets would discard and the last")
    max_memory_reserved: int
    max_memory_requested: int = Field(description="requested_bytes.all.peak over the whole run (sizes before rounding)")
    phase_peak_allocated: int | None = Field(None, description="the Measurement's peak_allocated (max over phases), a check")
    phase_peak_reserved: int | None = None
    trace_peak_requested: int = Field(description="replayed from the trace: alloc minus free_completed sizes, which "
                                      "are requested sizes, so it checks max_memory_requested")
    trace_peak_reserved: int = Field(description="replayed from the trace: segment alloc/map minus free/unmap sizes")
    peak_device: int | None = Field(None, description="the Measurement's NVML device peak above the baseline")
    memory_fraction: float | None = Field(None, description="set_per_process_memory_fraction in force; None: uncapped")
    device_total_bytes: int
    num_alloc_retries: int
    num_ooms: int
    events: int = Field(description="entries in the trace (device_traces[device])")
    truncated: bool = Field(description="the trace reached max_entries, so its oldest entries were overwritten")
    max_entries: int = MAX_ENTRIES
    empty_cache_calls: int
    harness_calls: list[HarnessCall]
    note: str = ("record_memory_history(enabled='all', context=None, stacks='python') from before the first CUDA "
                 "allocation; harness_calls lists every empty_cache / reset_peak_memory_stats / "
                 "set_per_process_memory_fraction made through torch.cuda while recording, with its trace position")
    gpu_name: str
    torch: str
    transformers: str | None = None
    peft: str | None = None
    bitsandbytes: str | None = None
    git_commit: str | None = None
    date: str
    pickle_file: str
    pickle_bytes: int


class Recorder:
    """Recording state of one process: the wrapped torch.cuda calls and the peaks the resets discard."""

    def __init__(self, torch, path: Path):
        self.torch, self.path = torch, Path(path)
        self.calls: list[HarnessCall] = []
        self.fraction: float | None = None
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=MAX_ENTRIES)
        for name in WRAPPED:
            self._wrap(name)

    def _wrap(self, name: str) -> None:
        original = getattr(self.torch.cuda.memory, name)

        def wrapper(*args, **kwargs):
            stats = self.torch.cuda.memory_stats()
            frame = sys._getframe(1)
            call = HarnessCall(call=name, allocs_before=stats.get("allocation.all.allocated", 0),
                               frees_before=stats.get("allocation.all.freed", 0), time_us=time.time_ns() // 1000,
                               caller=f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            if name == "reset_peak_memory_stats":
                call.peak_allocated = stats.get("allocated_bytes.all.peak", 0)
                call.peak_reserved = stats.get("reserved_bytes.all.peak", 0)
                call.peak_requested = stats.get("requested_bytes.all.peak", 0)
            if name == "set_per_process_memory_fraction":
                call.value = self.fraction = float(args[0] if args else kwargs["fraction"])
            self.calls.append(call)
            return original(*args, **kwargs)

        setattr(self.torch.cuda.memory, name, wrapper)
        setattr(self.torch.cuda, name, wrapper)

    def dump(self, measurement: Measurement) -> HistorySidecar:
        """Write the gzipped snapshot and its sidecar; stop recording."""
        from .provenance import git_commit, version

        torch, path = self.torch, self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        stats = torch.cuda.memory_stats()
        device = torch.cuda.current_device()
        raw = path.with_name(path.name + ".part")
        torch.cuda.memory._dump_snapshot(str(raw))
        torch.cuda.memory._record_memory_history(enabled=None)
        with raw.open("rb") as handle:
            trace = pickle.load(handle)["device_traces"][device]
        with raw.open("rb") as src, gzip.open(path, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
        place(trace, self.calls)
        requested_peak, reserved_peak = replay_peaks(trace)
        resets = [c for c in self.calls if c.peak_allocated is not None]
        scenario = measurement.scenario
        sidecar = HistorySidecar(
            scenario=scenario.name, model=scenario.model, settings=scenario.settings, status=measurement.status,
            oom_phase=measurement.oom_phase, alloc_conf=os.environ.get(ALLOC_CONF) or None,
            max_memory_allocated=max([stats.get("allocated_bytes.all.peak", 0)] + [c.peak_allocated for c in resets]),
            max_memory_reserved=max([stats.get("reserved_bytes.all.peak", 0)] + [c.peak_reserved for c in resets]),
            max_memory_requested=max([stats.get("requested_bytes.all.peak", 0)] + [c.peak_requested for c in resets]),
            phase_peak_allocated=measurement.peak_allocated, phase_peak_reserved=measurement.peak_reserved,
            trace_peak_requested=requested_peak, trace_peak_reserved=reserved_peak, peak_device=measurement.peak_device,
            memory_fraction=self.fraction, device_total_bytes=torch.cuda.get_device_properties(device).total_memory,
            num_alloc_retries=stats.get("num_alloc_retries", 0), num_ooms=stats.get("num_ooms", 0),
            events=len(trace), truncated=len(trace) >= MAX_ENTRIES,
            empty_cache_calls=sum(c.call == "empty_cache" for c in self.calls), harness_calls=self.calls,
            gpu_name=torch.cuda.get_device_name(device), torch=torch.__version__,
            **{lib: version(lib) for lib in ("transformers", "peft", "bitsandbytes")}, git_commit=git_commit(),
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            pickle_file=path.name, pickle_bytes=path.stat().st_size,
        )
        sidecar_path(path).write_text(sidecar.model_dump_json(indent=1) + "\n")
        return sidecar


def sidecar_path(path: Path) -> Path:
    """``DIR/<scenario>.pickle.gz`` -> ``DIR/<scenario>.json``."""
    return path.with_name(path.name.removesuffix(".pickle.gz") + ".json")


def place(trace: list[dict], calls: list[HarnessCall]) -> None:
    """Each call's ``events_before``: the shortest trace prefix holding its alloc and free counts (frees counted
    at ``free_requested``, where torch's statistics count them), plus the ``free_completed`` entries that follow."""
    allocs = frees = 0
    pending = iter(calls)
    call = next(pending, None)
    for index in range(len(trace) + 1):
        while call is not None and allocs >= call.allocs_before and frees >= call.frees_before:
            end = index
            while end < len(trace) and trace[end]["action"] == "free_completed":
                end += 1
            call.events_before = end
            call = next(pending, None)
        if index == len(trace) or call is None:
            break
        action = trace[index]["action"]
        allocs += action == "alloc"
        frees += action == "free_requested"


def replay_peaks(trace: list[dict]) -> tuple[int, int]:
    """Peak requested and reserved bytes replayed from the trace alone (it starts from an empty allocator;
    alloc and free entries carry the requested size, segment entries the segment's)."""
    sign = {"alloc": (1, 0), "free_completed": (-1, 0), "segment_alloc": (0, 1), "segment_map": (0, 1),
            "segment_free": (0, -1), "segment_unmap": (0, -1)}
    requested = reserved = peak_requested = peak_reserved = 0
    for entry in trace:
        a, r = sign.get(entry["action"], (0, 0))
        requested += a * entry["size"]
        reserved += r * entry["size"]
        peak_requested, peak_reserved = max(peak_requested, requested), max(peak_reserved, reserved)
    return peak_requested, peak_reserved


def start(torch, path: str | Path | None) -> Recorder | None:
    """Start recording into ``path`` (None: no history); call after CUDA init, before any CUDA allocation."""
    return Recorder(torch, Path(path)) if path else None
