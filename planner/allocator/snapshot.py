"""Read the allocation history of one device from a ``torch.cuda.memory._dump_snapshot`` pickle, without
torch and without running code from the file.

Layout (torch/cuda/memory.py ``_snapshot`` docstring, ``Snapshot``/``TraceEntry``): a dict with
``segments`` and ``device_traces``, one list of trace entries per device; an entry is a dict with
``action``, ``addr``, ``size``, ``stream``, ``time_us``, ``frames`` and, in recent versions,
``compile_context``/``user_metadata``. Only ``alloc``, ``free_requested`` and ``free_completed`` entries
are read: the ``segment_*``, ``snapshot`` and ``oom`` entries and the ``segments`` key record what the
allocator did, the answer the simulation must find for itself.

The file may be gzip-compressed (detected by its magic bytes). The unpickler resolves no global at all:
a snapshot holds only dicts, lists, tuples, strings, numbers, booleans and None, which pickle builds
without one, so any pickle naming a class or function is refused instead of run.
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Mapping
from pathlib import Path

from ..errors import QPlanError
from .replay import Event

REPLAYED = ("alloc", "free_requested", "free_completed")
_GZIP_MAGIC = b"\x1f\x8b"


class _Refused(pickle.UnpicklingError):
    """The pickle names a Python object."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise _Refused(f"it names the Python object {module}.{name}; only plain data is read")


def load_snapshot(path: str | Path) -> object:
    """The unpickled file (a dict for a real snapshot), read as the module docstring says."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise QPlanError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return _PlainUnpickler(io.BytesIO(raw)).load()
    except _Refused as err:
        raise QPlanError(f"{path} is not a plain-data pickle: {err}") from None
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, IndexError, KeyError, MemoryError) as err:
        raise QPlanError(f"{path} is not a memory snapshot pickle ({type(err).__name__}: {err})") from None


def load_events(path: str | Path, device: int = 0, inserts: Mapping[int, list[Event]] | None = None) -> list[Event]:
    """The ``alloc``/``free_requested``/``free_completed`` entries of ``device``'s trace, in order, with
    ``inserts[n]`` (calls the trace does not record) placed before its entry ``n``."""
    inserts = inserts or {}
    path = Path(path)
    snapshot = load_snapshot(path)
    traces = snapshot.get("device_traces") if isinstance(snapshot, dict) else None
    if not isinstance(traces, list):
        raise QPlanError(f"{path} is not a memory snapshot: no 'device_traces' list (was it written by "
                         "torch.cuda.memory._dump_snapshot after _record_memory_history?)")
    if not 0 <= device < len(traces) or not isinstance(traces[device], list):
        raise QPlanError(f"{path} has traces for devices 0..{len(traces) - 1}, not device {device}")
    events = []
    for n, entry in enumerate(traces[device]):
        events.extend(inserts.get(n, ()))
        if not isinstance(entry, dict):
            raise QPlanError(f"{path}: trace entry {n} of device {device} is not a dict")
        if entry.get("action") not in REPLAYED:
            continue
        fields = [entry.get(key) for key in ("addr", "size", "stream")]
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in fields):
            raise QPlanError(f"{path}: trace entry {n} ({entry.get('action')}) lacks an integer addr, size or stream")
        events.append(Event(entry["action"], *fields))
    return events + list(inserts.get(len(traces[device]), ()))
