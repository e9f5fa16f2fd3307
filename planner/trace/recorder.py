"""The allocation recorder: a ``TorchDispatchMode`` entered inside ``FakeTensorMode`` that turns the storages
of fake CUDA tensors into the caching allocator's request stream.

- An allocation is a storage seen for the first time among an op's outputs (``nbytes`` of the new
  storage, what ``c10/cuda/CUDACachingAllocator.cpp:malloc`` is asked for; zero-byte storages never reach it).
- A free is that storage's death: ``weakref.finalize`` on its Python object fires when the ``StorageImpl``
  dies, because torch keeps a storage's Python object alive as long as the ``StorageImpl`` lives
  (PyObject preservation, ``torch/csrc/Storage.cpp``), whoever holds it — views, autograd's saved
  variables in C++, the autocast weight cache, the autograd engine's device thread.
- Ops whose CUDA kernel allocates more than its outputs (bitsandbytes' dequantize-then-matmul, the
  cuBLAS workspace, flash attention's backward buffers) go to a *kernel twin* (``kernels.py``): a function
  of ``(recorder, func, args, kwargs)`` that makes the same allocations in the same order, under the recorder.

Events are the dicts ``planner.allocator`` replays: ``{"action", "addr", "size", "stream"}`` with
``alloc``, then ``free_requested`` immediately followed by ``free_completed``; every request is on the
default stream (0), as in the recipe. An ``alloc`` also names the op that made it (``"op"``), as the
frames of a real allocator history do.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MIN_BLOCK = 512  # kMinBlockSize: the caching allocator rounds every request up to a multiple of 512 B


def rounded(size: int) -> int:
    """The block size torch's ``allocated_bytes`` counts for a request (``CUDACachingAllocator.cpp:round_size``)."""
    return max(MIN_BLOCK, -(-size // MIN_BLOCK) * MIN_BLOCK)


class Recorder(TorchDispatchMode):
    """Records every CUDA storage birth and death; ``twins`` maps ops to their kernel twins."""

    def __init__(self, twins: dict):
        super().__init__()
        self.twins = twins
        self.events: list[dict] = []
        self.phases: list[dict] = []
        self.notes: list[str] = []
        self.live: dict[int, tuple[int, int]] = {}  # StorageImpl address -> (addr id, bytes)
        self.managed: dict[int, int] = {}  # storages in managed memory (paged optimizer state): bytes
        self.managed_bytes = self._next = self.requests = 0
        self.allocated = self.allocated_rounded = 0
        self.peak = self.peak_rounded = 0
        self._managed_depth = 0
        self._op = "load"
        self.closed = False

    # -- dispatch -----------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._op = func.__name__
        twin = self.twins.get(func)
        out = twin(self, func, args, kwargs) if twin else func(*args, **kwargs)
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.see(leaf)
        return out

    def see(self, tensor) -> None:
        """Record the storage of ``tensor`` if it is new (or resized) CUDA memory."""
        if tensor.device.type != "cuda" or self.closed:
            return
        storage = tensor.untyped_storage()
        key, size = storage._cdata, storage.nbytes()
        known = self.live.get(key)
        if known is not None:
            if known[1] != size:  # resize_ / set_: a new block, the old one freed after the copy
                addr = self._alloc(size)
                self._free_addr(*known)
                self.live[key] = (addr, size)
            return
        if key in self.managed or size == 0:
            return
        if self._managed_depth:
            self.managed[key] = size
            self.managed_bytes += size
            weakref.finalize(storage, self.managed.pop, key, None)
            return
        self.live[key] = (self._alloc(size), size)
        weakref.finalize(storage, self._died, key)

    @contextlib.contextmanager
    def in_managed_memory(self):
        """Storages born inside are ``cudaMallocManaged`` memory (bitsandbytes' paged buffers): counted in
        ``managed_bytes``, never sent to the caching allocator."""
        self._managed_depth += 1
        try:
            yield
        finally:
            self._managed_depth -= 1

    # -- events -------------------------------------------------------------------------------------
    def reserve_block(self, size: int, kernel: str) -> int:
        """An allocation a kernel makes that no tensor shows (cuBLAS workspace, kernel scratch); returns
        its addr for :meth:`release_block`."""
        return self._alloc(size, kernel)

    def release_block(self, addr: int, size: int) -> None:
        self._free_addr(addr, size)

    def _alloc(self, size: int, op: str | None = None) -> int:
        addr, self._next = self._next, self._next + 1
        self.requests += 1
        self.events.append({"action": "alloc", "addr": addr, "size": size, "stream": 0, "op": op or self._op})
        self.allocated += size
        self.allocated_rounded += rounded(size)
        self.peak = max(self.peak, self.allocated)
        self.peak_rounded = max(self.peak_rounded, self.allocated_rounded)
        return addr

    def _died(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry is not None and not self.closed:
            self._free_addr(*entry)

    def _free_addr(self, addr: int, size: int) -> None:
        self.events.append({"action": "free_requested", "addr": addr, "size": size, "stream": 0})
        self.events.append({"action": "free_completed", "addr": addr, "size": size, "stream": 0})
        self.allocated -= size
        self.allocated_rounded -= rounded(size)

    # -- phases -------------------------------------------------------------------------------------
    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()`` was called (peft's ``prepare_model_for_kbit_training`` calls it): the
        caching allocator releases its free segments there, which the allocator simulator replays."""
        self.events.append({"action": "empty_cache", "addr": 0, "size": 0, "stream": 0})

    def mark(self, name: str) -> None:
        """Start phase ``name`` at the next event (closing the one before)."""
        self.close_phase()
        self.phases.append({"name": name, "start": len(self.events), "end": None,
                            "allocated_at_start": self.allocated_rounded, "peak_rounded": self.allocated_rounded})

    def close(self) -> None:
        """End the trace: what dies later (the model and optimizer, when the caller lets go) is not recorded."""
        self.close_phase()
        self.closed = True

    def close_phase(self) -> None:
        if self.phases and self.phases[-1]["end"] is None:
            phase = self.phases[-1]
            phase["end"] = len(self.events)
            phase["peak_rounded"] = _peak_between(self.events, phase["start"], phase["end"], phase["allocated_at_start"])


def _peak_between(events, start: int, end: int, base: int) -> int:
    """The highest rounded live total over ``events[start:end]``, starting from ``base``."""
    now = peak = base
    for event in events[start:end]:
        if event["action"] == "alloc":
            now += rounded(event["size"])
            peak = max(peak, now)
        elif event["action"] == "free_completed":
            now -= rounded(event["size"])
    return peak
