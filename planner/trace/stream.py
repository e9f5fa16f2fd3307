"""A traced token stream (:func:`planner.trace.extrapolate.tokens`) as allocator events for the simulator
(:func:`planner.allocator.simulate`).

Tokens name each free by its block's (size, op), not its address, because an extended stream has no
addresses. A free is paired with the most recent live allocation of that (size, op): within a layer the
temporaries die last-made first, and across layers backward frees the last layer's saved tensors first,
so last-in first-out is the order the real step frees in. ``tests/test_trace_plan.py`` checks that the
pairing gives the same simulated peaks as the full trace's own addresses.
"""

from __future__ import annotations

from collections import defaultdict


def events(stream: list[tuple]) -> list[dict]:
    """``alloc`` / ``free_requested`` + ``free_completed`` / ``empty_cache`` events with made-up addresses."""
    live: dict[tuple, list[int]] = defaultdict(list)
    out: list[dict] = []
    for n, token in enumerate(stream):
        if token[0] == "a":
            live[token[1], token[2]].append(n)
            out.append({"action": "alloc", "addr": n, "size": token[1], "stream": 0})
        elif token[0] == "F":
            for size, op in token[1]:
                addr = live[size, op].pop()
                out.append({"action": "free_requested", "addr": addr, "size": size, "stream": 0})
                out.append({"action": "free_completed", "addr": addr, "size": size, "stream": 0})
        elif token[0] == "E":
            out.append({"action": "empty_cache"})
    return out
