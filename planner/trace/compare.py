"""A trace against a real GPU history of the same recipe (``qplan measure --history-dir``: a gzipped
``torch.cuda.memory._dump_snapshot`` with a sidecar ``.json``).

Both become request streams of sizes (``alloc`` and ``free_completed``; the snapshot's other actions are
segment events and its own markers). Compared: the allocated peak (each request rounded up to 512 B, as
``allocated_bytes`` counts blocks; the sidecar's ``max_memory_allocated`` also counts the remainders the
allocator did not split off), and the order of the large requests (>= 1 MiB), from the start of load on:
the first place the two sequences part, and the multiset difference.
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections import Counter
from pathlib import Path

from planner.trace.recorder import rounded

LARGE = 1 << 20


def history_stream(path: Path) -> list[tuple[str, int]]:
    """``("a" | "f", size)`` per alloc and completed free of a snapshot's device trace."""
    with gzip.open(path, "rb") as handle:
        snapshot = pickle.load(handle)
    trace = next(t for t in snapshot["device_traces"] if t)
    return [("a" if e["action"] == "alloc" else "f", int(e["size"])) for e in trace if e["action"] in ("alloc", "free_completed")]


def trace_stream(stream: list[tuple]) -> list[tuple[str, int]]:
    """The same from a trace's token stream (``extrapolate.tokens``: batches of frees spread out)."""
    out: list[tuple[str, int]] = []
    for token in stream:
        if token[0] == "a":
            out.append(("a", token[1]))
        elif token[0] == "F":
            out += [("f", size) for size, _ in token[1]]
    return out


def peak(stream: list[tuple[str, int]]) -> int:
    now = best = 0
    for action, size in stream:
        now += rounded(size) if action == "a" else -rounded(size)
        best = max(best, now)
    return best


def compare(traced: list[tuple], history: Path) -> dict:
    """Peaks and large-request order of a trace's token stream against a history file (and its sidecar)."""
    real, ours = history_stream(history), trace_stream(traced)
    sidecar_path = history.with_name(history.name.removesuffix(".pickle.gz") + ".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    real_large = [size for action, size in real if action == "a" and size >= LARGE]
    ours_large = [size for action, size in ours if action == "a" and size >= LARGE]
    start = real_large.index(ours_large[0]) if ours_large and ours_large[0] in real_large else 0
    real_large = real_large[start:]  # from the start of load (the harness's own probes come first)
    parted = next((i for i, (a, b) in enumerate(zip(real_large, ours_large)) if a != b), None)
    if parted is None and len(real_large) != len(ours_large):
        parted = min(len(real_large), len(ours_large))
    real_peak, our_peak = peak(real), peak(ours)
    return {
        "history": history.name,
        "allocated_peak_history": real_peak,
        "allocated_peak_trace": our_peak,
        "peak_difference": (our_peak - real_peak) / real_peak if real_peak else None,
        "max_memory_allocated": sidecar.get("max_memory_allocated"),
        "requests_history": sum(1 for action, _ in real if action == "a"),
        "requests_trace": sum(1 for action, _ in ours if action == "a"),
        "large_requests": (len(real_large), len(ours_large)),
        "large_order_parts_at": parted,
        "large_around_parting": None if parted is None else (real_large[max(0, parted - 3):parted + 5], ours_large[max(0, parted - 3):parted + 5]),
        "large_only_in_history": sorted((Counter(real_large) - Counter(ours_large)).items())[:12],
        "large_only_in_trace": sorted((Counter(ours_large) - Counter(real_large)).items())[:12],
    }
