"""What a recorded history's sidecar JSON adds to its trace: the settings of the run and the calls a
memory history does not record.

A history written by ``qplan measure --history-dir`` (planner/measure/history.py) has a sidecar
``<scenario>.json`` with the process's ``alloc_conf``, ``device_total_bytes``, torch's whole-run
``max_memory_reserved``/``max_memory_allocated`` and ``harness_calls``: every ``empty_cache`` and
``set_per_process_memory_fraction`` call with ``events_before``, its position in the trace. Those calls
change the allocator (``emptyCache`` releases segments, ``setMemoryFraction`` sets the cap) but leave no
trace entry of their own, so the replay inserts them there. A sidecar without ``harness_calls`` (only
``memory_fraction``) is taken to have set its fraction before the first allocation.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..errors import QPlanError
from .config import AllocatorConfig
from .replay import Event


class HarnessCall(BaseModel):
    call: str
    events_before: int | None = None
    value: float | None = None


class Sidecar(BaseModel):
    """The sidecar keys the replay reads; others are ignored."""

    alloc_conf: str | None = None
    memory_fraction: float | None = None
    device_total_bytes: int
    max_memory_reserved: int
    max_memory_allocated: int
    max_memory_requested: int | None = None
    harness_calls: list[HarnessCall] | None = None

    def config(self) -> AllocatorConfig:
        """The run's settings; the cap only when no call places it in the trace."""
        fraction = self.memory_fraction if self.harness_calls is None else None
        cap = int(fraction * self.device_total_bytes) if fraction else None
        return AllocatorConfig.from_conf(self.alloc_conf, cap_bytes=cap, device_total_bytes=self.device_total_bytes)

    def inserts(self) -> dict[int, list[Event]]:
        """``empty_cache`` and ``set_cap`` events by the trace position they go before."""
        out: dict[int, list[Event]] = {}
        for call in self.harness_calls or ():
            if call.call == "empty_cache":
                event = Event("empty_cache")
            elif call.call == "set_per_process_memory_fraction":
                event = Event("set_cap", size=int(call.value * self.device_total_bytes))
            else:
                continue
            if call.events_before is None:
                raise QPlanError(f"the sidecar's {call.call} call has no trace position (events_before)")
            out.setdefault(call.events_before, []).append(event)
        return out


def read_sidecar(path: str | Path) -> Sidecar:
    try:
        return Sidecar.model_validate(json.loads(Path(path).read_text()))
    except OSError as err:
        raise QPlanError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, ValidationError) as err:
        raise QPlanError(f"{path} is not a history sidecar: {str(err).splitlines()[0]}") from None
