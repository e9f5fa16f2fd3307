"""From traces of a few layers (and micro-batches) to the full model's request sizes, without tracing it.

The decoder layers of a model are identical, and so are the micro-batches after the first of a step; so
the request stream of ``n + 1`` layers is that of ``n`` layers with one more copy of a per-layer block
at each place the layers show up (loading, adapter, forward, recompute and backward, clipping, the
optimizer). :func:`insertions` finds those blocks by walking both token streams together: where they part,
the longer one holds one more period of the run it is in; or one request grows by a per-layer amount (the
model-sized ``caching_allocator_warmup`` block, the stacked per-gradient norms of ``clip_grad_norm_``); or a
batch of frees holds more. :func:`extend` then makes each change ``k`` times.

Tokens keep an event's action, size and op (a free: its block's), and phase marks, not addrs, so the
extended stream gives the exact allocated peak, per-phase peaks and multiset of requests, but not which
free frees which block: the event stream itself comes from a full trace. Frees that come together (no
alloc between them) are one token, a sorted batch: their order can follow addresses (the autocast weight
cache is a hash map cleared at once on leaving autocast, ``aten/src/ATen/autocast_mode.cpp:clear_cache``)
and changes no peak. ``tests/test_trace.py`` checks the extension against a full trace, token for token.
"""

from __future__ import annotations

from collections import Counter

from planner.trace.errors import TraceUnavailable
from planner.trace.recorder import rounded

WINDOW = 32  # tokens after an insertion that must line up again (fewer where the next insertion comes sooner)


def tokens(events: list[dict], phases: list[dict]) -> list[tuple]:
    """``("a", size, op)`` per alloc, ``("F", ((size, op), ...))`` per batch of frees, ``("E",)`` per
    ``empty_cache`` call, ``("p", name)`` at each phase start."""
    starts: dict[int, list[str]] = {}
    for phase in phases:
        starts.setdefault(phase["start"], []).append(phase["name"])
    op_of: dict[int, str] = {}
    out: list[tuple] = []
    batch: list[tuple] = []

    def flush():
        if batch:
            out.append(("F", tuple(sorted(batch))))
            batch.clear()

    for index, event in enumerate(events):
        if index in starts:
            flush()
            out += [("p", name) for name in starts[index]]
        if event["action"] == "alloc":
            flush()
            op_of[event["addr"]] = event["op"]
            out.append(("a", event["size"], event["op"]))
        elif event["action"] == "free_completed":
            batch.append((event["size"], op_of.pop(event["addr"])))
        elif event["action"] == "empty_cache":
            flush()
            out.append(("E",))
    flush()
    return out + [("p", name) for name in starts.get(len(events), ())]


def insertions(short: list[tuple], long: list[tuple]) -> list[tuple]:
    """What ``long`` has more than ``short``: ``(index in short, "block", tokens)``,
    ``(index, "grow", bytes)`` for a request that is larger, ``(index, "batch", (added, grown))`` for a
    batch of frees holding more (or larger) frees."""
    found: list[tuple] = []
    extra = len(long) - len(short)
    i = j = 0
    while i < len(short) or j < len(long):
        a = short[i] if i < len(short) else None
        b = long[j] if j < len(long) else None
        if a == b:
            i, j = i + 1, j + 1
            continue
        period = _period_at(short, long, i, j, extra)
        if period is not None:
            found.append((i, "block", long[j:j + period]))
            extra -= period
            j += period
        elif a and b and a[0] == b[0] == "a" and a[2] == b[2]:
            found.append((i, "grow", b[1] - a[1]))
            i, j = i + 1, j + 1
        elif a and b and a[0] == b[0] == "F" and (change := _batch_change(a[1], b[1])) is not None:
            found.append((i, "batch", change))
            i, j = i + 1, j + 1
        else:
            raise TraceUnavailable(f"the traces of n and n+1 layers differ by more than repeated blocks (token {j})")
    return found


def _batch_change(small: tuple, large: tuple):
    """``(added frees, {op: growth})`` when ``large`` is ``small`` with more frees, or frees of the same ops
    grown; ``None`` otherwise."""
    added, removed = Counter(large) - Counter(small), Counter(small) - Counter(large)
    grown: dict[tuple, int] = {}
    for (size, op), count in removed.items():
        bigger = [(s, o) for (s, o) in added if o == op]
        if count != 1 or len(bigger) != 1 or added[bigger[0]] < 1:
            return None
        grown[(size, op)] = bigger[0][0] - size
        added[bigger[0]] -= 1
    return tuple(sorted((+added).elements())), tuple(sorted(grown.items()))


def _period_at(short, long, i: int, j: int, extra: int) -> int | None:
    """The period of the run ``long`` is in at ``j`` after which ``long`` agrees longest with ``short`` at
    ``i`` (the first that agrees for ``WINDOW`` tokens, or to the end); ``None`` when no period agrees at all."""
    best, best_agree = None, 0
    for k in range(1, min(extra, j) + 1):
        if long[j - k:j] == long[j:j + k]:
            agree = _agreement(short, long, i, j + k)
            if agree > best_agree or (best is None and i == len(short)):
                best, best_agree = k, agree
            if agree >= min(WINDOW, len(short) - i):
                break
    return best if best_agree or i == len(short) else None


def _agreement(short, long, i: int, j: int) -> int:
    """How many tokens from ``short[i]`` and ``long[j]`` on are equal (the first may be the same request
    grown, or a batch of frees with more in it)."""
    n = 0
    while n < WINDOW and i + n < len(short) and j + n < len(long):
        a, b = short[i + n], long[j + n]
        if not (a == b or (n == 0 and _changed(a, b))):
            break
        n += 1
    return n


def _changed(a: tuple, b: tuple) -> bool:
    """``b`` is ``a`` grown: the same request larger, or a batch of frees with more (or larger) frees."""
    if a[0] == b[0] == "a":
        return a[2] == b[2]
    return a[0] == b[0] == "F" and _batch_change(a[1], b[1]) is not None


def extend(short: list[tuple], found: list[tuple], copies: int) -> list[tuple]:
    """``short`` with each change of :func:`insertions` made ``copies`` times."""
    out: list[tuple] = []
    last = 0
    for index, kind, change in found:
        out += short[last:index]
        last = index
        if kind == "block":
            out += change * copies
            continue
        token, last = short[index], index + 1
        if kind == "grow":
            out.append(("a", token[1] + copies * change, token[2]))
        else:
            added, grown = change
            frees = Counter(token[1])
            for (size, op), growth in grown:
                frees[(size, op)] -= 1
                frees[(size + copies * growth, op)] += 1
            frees.update(list(added) * copies)
            out.append(("F", tuple(sorted((+frees).elements()))))
    return out + short[last:]


def extrapolate(short: list[tuple], long: list[tuple], copies: int) -> list[tuple]:
    """The stream with ``copies`` more periods than ``short``, from ``short`` and ``long`` (one more)."""
    return extend(short, insertions(short, long), copies)


def summary(stream: list[tuple]) -> dict:
    """Allocated peaks (rounded to 512 B, and unrounded), request count and per-phase peaks of a token stream."""
    now = exact = peak = peak_exact = requests = 0
    phases: list[dict] = []
    for token in stream:
        if token[0] == "p":
            phases.append({"name": token[1], "allocated_at_start": now, "peak_rounded": now})
        elif token[0] == "a":
            now, exact, requests = now + rounded(token[1]), exact + token[1], requests + 1
            peak, peak_exact = max(peak, now), max(peak_exact, exact)
            if phases:
                phases[-1]["peak_rounded"] = max(phases[-1]["peak_rounded"], now)
        elif token[0] == "F":
            now -= sum(rounded(size) for size, _ in token[1])
            exact -= sum(size for size, _ in token[1])
    return {"allocated_peak_bytes": peak, "allocated_peak_unrounded_bytes": peak_exact, "requests": requests, "phases": phases}
