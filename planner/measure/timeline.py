"""``python -m planner.measure.timeline OUT.json``: what is alive at the forward and backward peaks of one
training micro-step, block by block, from the caching allocator's own history.

Each case is a two-layer copy of a model at full width (random NF4 weights, the measuring recipe of
``planner.measure.recipe``). Two micro-steps run; the second is recorded with
``torch.cuda.memory._record_memory_history``. Allocation sizes 512*k bytes, freed at once, mark where each
decoder layer's forward starts (again when checkpointing recomputes it) and where the forward and backward
start and end. For each window the report gives the allocated peak above the step's start and the blocks
allocated in the step that are alive at it, grouped by size and the allocating Python frame. That is what
``planner.memory`` has to add up to per layer, whatever the model's depth.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

from planner.inputs.settings import TrainSettings
from planner.profiles import load_profile_json
from planner.measure.cuda import run_tool
from planner.measure.recipe import random_batch, vocab_size
from planner.measure.saved import shallow_model

CASES = {name: (case["model"], case["settings"]) for name, case in load_profile_json("probes.json")["timeline"].items()}
LAYERS = 2
MARK_UNIT = 512  # the allocator rounds to 512 bytes; marker k is one block of 512*(MARK_BASE+k)
MARK_BASE = 1000


class Marks:
    """Marker allocations that name points in the allocator's trace."""

    def __init__(self, torch):
        self.torch, self.names = torch, []

    def __call__(self, name: str) -> None:
        self.names.append(name)
        self.torch.empty(MARK_UNIT * (MARK_BASE + len(self.names) - 1), dtype=self.torch.uint8, device="cuda")

    def name_of(self, size: int) -> str | None:
        k = size // MARK_UNIT - MARK_BASE
        return self.names[k] if size % MARK_UNIT == 0 and 0 <= k < len(self.names) else None


def _frame(entry: dict) -> str:
    """The innermost Python frame outside torch's own memory and autograd plumbing."""
    for f in entry.get("frames", []):
        name = f["filename"]
        if "torch/cuda/memory" in name or "torch/_tensor.py" in name or "torch/autograd/__init__" in name:
            continue
        return f"{Path(name).parent.name}/{Path(name).name}:{f['line']}:{f['name']}"
    return "autograd engine (C++)"


def window_peaks(trace: list[dict], marks: Marks, windows: dict[str, tuple[str, str]]) -> dict:
    """For each window (start mark, end mark): the peak of bytes allocated in the step, and the blocks alive
    at that peak grouped by (size, frame)."""
    events = []
    for entry in trace:
        if entry["action"] not in ("alloc", "free_completed"):
            continue
        mark = marks.name_of(entry["size"])
        if mark is not None:
            if entry["action"] == "alloc":
                events.append(("mark", mark, 0, ""))
            continue
        events.append((entry["action"], entry["addr"], entry["size"], _frame(entry) if entry["action"] == "alloc" else ""))
    index = {e[1]: i for i, e in enumerate(events) if e[0] == "mark"}  # a repeated mark: its last position
    report = {}
    for name, (start, end) in windows.items():
        if start not in index or end not in index:
            continue
        alive: dict[int, tuple[int, str]] = {}
        level = peak = 0
        peak_alive: dict[int, tuple[int, str]] = {}
        for i, (action, addr, size, frame) in enumerate(events[: index[end]]):
            if action == "alloc":
                alive[addr] = (size, frame)
                level += size
            elif action == "free_completed":
                level -= size
                alive.pop(addr, None)
            if i >= index[start] and level > peak:
                peak, peak_alive = level, dict(alive)
        groups = Counter()
        for size, frame in peak_alive.values():
            groups[(size, frame)] += 1
        report[name] = {
            "peak_above_step_start": peak,
            "alive_at_peak": sorted(([s, n, f] for (s, f), n in groups.items()), key=lambda row: -row[0] * row[1]),
        }
    return report


def probe(model: str, overrides: dict) -> dict:
    import torch

    settings = TrainSettings(gradient_checkpointing=True, **overrides)
    net, layers = shallow_model(model, settings, LAYERS, "cuda")
    marks = Marks(torch)
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda *_, i=i: marks(f"layer{i}"))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if settings.autocast else nullcontext()
    generator = torch.Generator().manual_seed(0)
    net.train()
    peaks = {}
    for step in range(2):
        ids = random_batch(torch, settings, vocab_size(net), generator).cuda()
        if step == 1:
            torch.cuda.synchronize()
            torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
            start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        marks("forward")
        with autocast:
            loss = net(input_ids=ids, labels=ids).loss
        marks("backward")
        fwd_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss.backward()
        marks("end")
        del loss, ids
        if step == 1:
            torch.cuda.synchronize()
            snapshot = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
            peaks = {"forward": fwd_peak - start, "backward": torch.cuda.max_memory_allocated() - start}
    trace = [e for device in snapshot["device_traces"] for e in device]
    # A layer's mark is set twice in the step (forward, recompute); window_peaks keeps the later one.
    windows = {"forward": ("forward", "backward"), "backward": ("backward", "end"),
               "backward loss": ("backward", f"layer{LAYERS - 1}")}
    for i in range(LAYERS):  # backward recomputes the layers in reverse order
        windows[f"backward layer{i}"] = (f"layer{i}", "end") if i == 0 else (f"layer{i}", f"layer{i - 1}")
    report = window_peaks(trace, marks, windows)
    return {"model": model, "settings": settings.model_dump(), "layers": LAYERS,
            "torch_peaks_above_step_start": peaks, "windows": report}


def main(argv: list[str] | None = None) -> int:
    import torch

    args = argv if argv is not None else sys.argv[1:]
    out = Path(args[0])
    only = set(args[1:])
    results = {}
    for name, (model, overrides) in CASES.items():
        if only and name not in only:
            continue
        try:
            results[name] = probe(model, overrides)
            print(name, results[name]["torch_peaks_above_step_start"], flush=True)
        except torch.OutOfMemoryError as err:
            results[name] = {"error": str(err).splitlines()[0]}
        out.write_text(json.dumps(results, indent=1) + "\n")
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "python -m planner.measure.timeline", "OUT.json [CASE...]"))
