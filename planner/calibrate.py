"""Fit the overhead terms of the analytic model to real GPU measurements, and check the model on
scenarios the fit did not see.

Parameters fitted (few, each physical; the tensor formulas themselves are not tuned):
- ``driver_reserved_bytes``: median NVML device-used before the measuring process touched CUDA.
- ``cuda_context_bytes``: median of ``peak_device - peak_reserved - paged_bytes``: everything on the device
  that the torch allocator does not hold (CUDA context, lazily loaded kernels, library handles).
- ``fragmentation_ratio`` / ``fragmentation_bytes``: least squares of measured peak reserved on measured
  peak allocated (allocator slack).
- ``backward_scale``: multiplier on the estimated backward working set that minimises the median relative
  error of predicted peak allocated.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .catalog import resolve_model
from .errors import QPlanError
from .memory import estimate
from .memory.overhead import OverheadProfile
from .results import Measurement


def load_measurements(paths: list[str | Path]) -> list[Measurement]:
    """Read JSON-lines measurement files; a bad line is one clear error naming file and line."""
    records: list[Measurement] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise QPlanError(f"no measurement file {path}")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(Measurement.model_validate_json(line))
            except ValidationError as err:
                raise QPlanError(f"{path}:{number}: not a measurement record ({err.error_count()} problems, first: {err.errors()[0]['msg']})") from None
    return records


def usable(records: list[Measurement]) -> list[Measurement]:
    """Completed runs with every number calibration needs."""
    return [
        r for r in records
        if r.status == "ok" and r.peak_allocated and r.peak_reserved and r.peak_device is not None
        and r.scenario.memory_cap_bytes is None
    ]


def _least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var if var else 1.0
    return slope, mean_y - slope * mean_x


def _allocated_error(records: list[Measurement], profile: OverheadProfile) -> float:
    errors = []
    for r in records:
        predicted = estimate(resolve_model(r.scenario.model), r.scenario.settings, profile).allocated_peak
        errors.append(abs(predicted - r.peak_allocated) / r.peak_allocated)
    return statistics.median(errors)


def fit_profile(records: list[Measurement], name: str, base: OverheadProfile) -> OverheadProfile:
    data = usable(records)
    if len(data) < 3:
        raise QPlanError(f"need at least 3 completed, uncapped measurements to calibrate; have {len(data)}")
    prov = data[0].provenance
    outside = [r.peak_device - r.peak_reserved - (r.paged_bytes or 0) for r in data]
    slope, intercept = _least_squares([r.peak_allocated for r in data], [r.peak_reserved for r in data])
    baselines = [r.baseline_device for r in data if r.baseline_device is not None]
    profile = base.model_copy(update={
        "name": name,
        "status": "calibrated",
        "gpu": prov.gpu_name if prov else "unknown",
        "versions": {k: v for k, v in (prov.model_dump() if prov else {}).items() if k in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "cuda", "driver") and v},
        "date": prov.date if prov else None,
        "source": f"qplan calibrate on {len(data)} measured scenarios",
        "cuda_context_bytes": int(statistics.median(outside)),
        "driver_reserved_bytes": int(statistics.median(baselines)) if baselines else base.driver_reserved_bytes,
        "fragmentation_ratio": round(slope - 1, 4),
        "fragmentation_bytes": int(intercept),
    })
    best = min(
        (i / 20 for i in range(0, 61)),
        key=lambda scale: _allocated_error(data, profile.model_copy(update={"backward_scale": scale})),
    )
    return profile.model_copy(update={"backward_scale": best, "fit": {"scenarios": sorted(r.scenario.name for r in data)}})


class Row(BaseModel):
    scenario: str
    model: str
    status: str
    measured_device: int | None
    predicted_device: int
    measured_allocated: int | None
    predicted_allocated: int
    device_error: float | None
    allocated_error: float | None
    cap_bytes: int | None = None
    predicted_fits_cap: bool | None = None


class Validation(BaseModel):
    profile: str
    fitted_on: list[str]
    rows: list[Row]
    median_device_error: float | None
    max_device_error: float | None
    median_allocated_error: float | None
    max_allocated_error: float | None
    false_fits: list[str]


def split_halves(records: list[Measurement]) -> tuple[list[Measurement], list[Measurement]]:
    """Alternate scenarios, sorted by name, into a fitting half and a held-out half."""
    ordered = sorted(records, key=lambda r: r.scenario.name)
    return ordered[0::2], ordered[1::2]


def validate(records: list[Measurement], profile: OverheadProfile, margin: float = 0.0) -> Validation:
    rows = []
    for r in records:
        arch = resolve_model(r.scenario.model)
        est = estimate(arch, r.scenario.settings, profile)
        cap = r.scenario.memory_cap_bytes
        row = Row(
            scenario=r.scenario.name, model=r.scenario.model, status=r.status,
            measured_device=r.peak_device, predicted_device=est.device_peak,
            measured_allocated=r.peak_allocated, predicted_allocated=est.allocated_peak,
            device_error=(est.device_peak - r.peak_device) / r.peak_device if r.status == "ok" and r.peak_device else None,
            allocated_error=(est.allocated_peak - r.peak_allocated) / r.peak_allocated if r.status == "ok" and r.peak_allocated else None,
            cap_bytes=cap,
            predicted_fits_cap=(est.device_peak <= cap * (1 - margin)) if cap else None,
        )
        rows.append(row)
    dev = [abs(x.device_error) for x in rows if x.device_error is not None and x.cap_bytes is None]
    alloc = [abs(x.allocated_error) for x in rows if x.allocated_error is not None and x.cap_bytes is None]
    return Validation(
        profile=profile.name,
        fitted_on=profile.fit.get("scenarios", []),
        rows=rows,
        median_device_error=statistics.median(dev) if dev else None,
        max_device_error=max(dev) if dev else None,
        median_allocated_error=statistics.median(alloc) if alloc else None,
        max_allocated_error=max(alloc) if alloc else None,
        false_fits=[x.scenario for x in rows if x.predicted_fits_cap and x.status == "oom"],
    )


def write_profile(profile: OverheadProfile, path: Path, force: bool = False) -> None:
    if path.exists() and not force:
        raise QPlanError(f"{path} exists; pass --force to replace it")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile.model_dump(), indent=1) + "\n")
    tmp.replace(path)
