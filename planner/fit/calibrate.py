"""Fit the overhead terms of the analytic model to real GPU measurements, and check the model on
scenarios the fit did not see.

Parameters fitted (few, each physical; the tensor formulas themselves are not tuned):
- ``driver_reserved_bytes``: median NVML device-used before the measuring process touched CUDA.
- ``cuda_context_bytes``: median of ``peak_device - peak_reserved - paged_bytes``: everything on the device
  that the torch allocator does not hold (CUDA context, lazily loaded kernels, library handles).
- ``fragmentation_bytes`` / ``fragmentation_recompute_ratio`` / ``fragmentation_logits_ratio``: least squares
  of the measured allocator slack (peak reserved - peak allocated) on [1, one recomputed layer's activations,
  fp32 logits], both analytic (see ``memory/overhead.py`` for why these two). ``fragmentation_ratio`` is 0.
  Runs of the default allocator fit these. Runs under ``expandable_segments:True`` (their settings, or the
  ``PYTORCH_CUDA_ALLOC_CONF`` in their provenance) fit the profile's ``expandable_segments`` terms: a share of
  the allocated peak and of the fp32 logits (``EXPANDABLE_TERMS``).
- ``cuda_context_bytes`` and ``driver_reserved_bytes`` come from the default-allocator runs, which are the
  profile's own GPU.
The tensor formulas are not tuned.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel

from planner.inputs.catalog import resolve_model
from planner.errors import QPlanError
from planner.pricing.margin import share_from_worst
from planner.memory.estimate import estimate
from planner.memory.overhead import AllocatorSlack, OverheadProfile
from planner.results import load_results
from planner.results import Measurement
from planner.inputs.settings import TrainSettings, expandable_in


def load_measurements(paths: list[str | Path]) -> list[Measurement]:
    """The measurements of every file: JSON lines from ``qplan measure`` or a ``qplan regress`` results file
    (:func:`planner.results.load_results`; a bad file or line, or a completed run whose peaks no GPU can show,
    is one clear error)."""
    return [m for path in paths for m in load_results(path).measurements]


def usable(records: list[Measurement]) -> list[Measurement]:
    """Completed runs with every number calibration needs."""
    return [
        r for r in records
        if r.status == "ok" and r.peak_allocated and r.peak_reserved and r.peak_device is not None
        and r.scenario.memory_cap_bytes is None
    ]


def least_squares(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Coefficients ``c`` minimising ``sum((row . c - y)^2)`` (normal equations, Gauss-Jordan with pivoting).
    A column that is zero in every row gets coefficient 0."""
    n = len(rows[0])
    live = [j for j in range(n) if any(row[j] for row in rows)]
    m = [[sum(r[i] * r[j] for r in rows) for j in live] + [sum(r[i] * y for r, y in zip(rows, ys))] for i in live]
    size = len(live)
    for col in range(size):
        pivot = max(range(col, size), key=lambda i: abs(m[i][col]))
        if not m[pivot][col]:
            raise QPlanError("calibration data cannot separate the fragmentation terms (singular fit)")
        m[col], m[pivot] = m[pivot], m[col]
        for i in range(size):
            if i != col:
                factor = m[i][col] / m[col][col]
                m[i] = [a - factor * b for a, b in zip(m[i], m[col])]
    coeffs = [0.0] * n
    for k, j in enumerate(live):
        coeffs[j] = m[k][size] / m[k][k]
    return coeffs


# Tensors only: for estimates whose allocator and context terms are being fitted, or left out.
NO_OVERHEAD = OverheadProfile(name="features", status="literature", gpu="*", source="", cuda_context_bytes=0,
                               cublas_workspace_bytes=0, fragmentation_ratio=0.0)


def record_settings(record: Measurement) -> TrainSettings:
    """The scenario's settings, with ``expandable_segments`` also set when the measuring process ran under it."""
    if record.provenance and expandable_in(record.provenance.alloc_conf):
        return record.scenario.settings.model_copy(update={"expandable_segments": True})
    return record.scenario.settings


def _slack_features(record: Measurement) -> dict[str, float]:
    """What each :class:`AllocatorSlack` term multiplies, from the record's analytic estimate (no overhead terms
    needed): 1, the allocated peak, one recomputed layer's activations, the fp32 logits."""
    est = estimate(resolve_model(record.scenario.model), record_settings(record), NO_OVERHEAD)
    return {"bytes": 1.0, "ratio": float(est.allocated_peak), "recompute_ratio": float(est.recomputed_layer_bytes),
            "logits_ratio": float(est.fp32_logits_bytes)}


DEFAULT_TERMS = ("bytes", "recompute_ratio", "logits_ratio")
# Under expandable segments the recompute's blocks are reused and a constant does not carry to small models
# (TinyLlama at 1024 tokens leaves 0.15 GiB where 7B-class runs leave 0.6-0.9): a share of the allocated peak
# and of the logits, chosen by held-out error on the first 13 expandable runs; the 7 measured after that choice
# (1B to 70B) came out within 1.7%.
EXPANDABLE_TERMS = ("ratio", "logits_ratio")


def fit_slack(records: list[Measurement], terms: tuple[str, ...] = DEFAULT_TERMS) -> AllocatorSlack:
    """Least squares of peak reserved - peak allocated on the ``terms`` of :func:`_slack_features`."""
    features = [_slack_features(r) for r in records]
    coefficients = least_squares([[f[term] for term in terms] for f in features],
                                 [float(r.peak_reserved - r.peak_allocated) for r in records])
    fitted = dict(zip(terms, coefficients))
    return AllocatorSlack(ratio=round(fitted.get("ratio", 0.0), 4), bytes=int(fitted.get("bytes", 0.0)),
                          recompute_ratio=round(fitted.get("recompute_ratio", 0.0), 4),
                          logits_ratio=round(fitted.get("logits_ratio", 0.0), 4))


def fit_profile(records: list[Measurement], name: str, base: OverheadProfile) -> OverheadProfile:
    data = usable(records)
    default = [r for r in data if not record_settings(r).expandable_segments]
    expandable = [r for r in data if record_settings(r).expandable_segments]
    if len(default) < 3:
        raise QPlanError(f"need at least 3 completed, uncapped measurements to calibrate; have {len(default)}")
    prov = default[0].provenance
    outside = [r.peak_device - r.peak_reserved - (r.paged_bytes or 0) for r in default]
    slack = fit_slack(default)
    baselines = [r.baseline_device for r in default if r.baseline_device is not None]
    expandable_terms = base.expandable_segments
    if len(expandable) >= 3:
        gpus = sorted({r.provenance.gpu_name for r in expandable if r.provenance})
        expandable_terms = fit_slack(expandable, EXPANDABLE_TERMS).model_copy(update={"fit": {
            "gpus": gpus, "scenarios": sorted(r.scenario.name for r in expandable)}})
    profile = base.model_copy(update={
        "name": name,
        "status": "calibrated",
        "gpu": prov.gpu_name if prov else "unknown",
        "versions": {k: v for k, v in (prov.model_dump() if prov else {}).items() if k in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "cuda", "driver") and v},
        "date": prov.date if prov else None,
        "source": f"qplan calibrate on {len(data)} measured scenarios",
        "cuda_context_bytes": int(statistics.median(outside)),
        "driver_reserved_bytes": int(statistics.median(baselines)) if baselines else base.driver_reserved_bytes,
        "fragmentation_ratio": 0.0,
        "fragmentation_bytes": slack.bytes,
        "fragmentation_recompute_ratio": slack.recompute_ratio,
        "fragmentation_logits_ratio": slack.logits_ratio,
        "expandable_segments": expandable_terms,
        "fit": {"scenarios": sorted(r.scenario.name for r in default)},
    })
    return profile


class Row(BaseModel):
    scenario: str
    model: str
    status: str
    allocator: str = "default"  # or "expandable_segments"
    measured_device: int | None
    predicted_device: int
    predicted_uncertain: int
    measured_allocated: int | None
    predicted_allocated: int
    device_error: float | None
    allocated_error: float | None
    cap_bytes: int | None = None
    predicted_fits_cap: bool | None = None


class ErrorStats(BaseModel):
    """Absolute relative errors of the completed, uncapped runs of one allocator setting."""

    scenarios: int
    median_device_error: float | None
    max_device_error: float | None
    median_allocated_error: float | None
    max_allocated_error: float | None


class Validation(BaseModel):
    profile: str
    fitted_on: list[str]
    rows: list[Row]
    allocators: dict[str, ErrorStats]  # "default" and, where measured, "expandable_segments"
    false_fits: list[str]

    @property
    def default(self) -> ErrorStats:
        """The default allocator's errors: the headline (what a run gets unless it sets PYTORCH_CUDA_ALLOC_CONF)."""
        return self.allocators.get("default") or error_stats([])


def split_halves(records: list[Measurement]) -> tuple[list[Measurement], list[Measurement]]:
    """Two folds: for each allocator setting, distinct (model, settings) pairs, sorted by scenario name, go
    alternately to each half, and repeats of one pair (a Trainer twin, a capped rerun) go with it, so no
    held-out run has its twin in the fit."""
    halves: tuple[list[Measurement], list[Measurement]] = ([], [])
    for expandable in (False, True):
        groups: dict[str, list[Measurement]] = {}
        for r in sorted(records, key=lambda r: r.scenario.name):
            settings = record_settings(r)
            if settings.expandable_segments == expandable:
                groups.setdefault(r.scenario.model + settings.model_dump_json(), []).append(r)
        for i, members in enumerate(groups.values()):
            halves[i % 2].extend(members)
    return halves


def cross_validate(records: list[Measurement], base: OverheadProfile, margin: float = 0.0) -> "Validation":
    """Two-fold validation: each half is predicted by a profile fitted on the other, so every scenario's
    error is a held-out error."""
    first, second = split_halves(records)
    rows = []
    for fit_half, held_out in ((first, second), (second, first)):
        profile = fit_profile(fit_half, "held-out-fit", base)
        rows += validate(held_out, profile, margin).rows
    return summarise("two-fold held-out fits", [], rows)


def validate(records: list[Measurement], profile: OverheadProfile, margin: float = 0.0) -> Validation:
    rows = []
    for r in records:
        arch = resolve_model(r.scenario.model)
        settings = record_settings(r)
        est = estimate(arch, settings, profile)
        cap = r.scenario.memory_cap_bytes
        row = Row(
            scenario=r.scenario.name, model=r.scenario.model, status=r.status,
            allocator="expandable_segments" if settings.expandable_segments else "default",
            measured_device=r.peak_device, predicted_device=est.device_peak, predicted_uncertain=est.uncertain_bytes,
            measured_allocated=r.peak_allocated, predicted_allocated=est.allocated_peak,
            device_error=(est.device_peak - r.peak_device) / r.peak_device if r.status == "ok" and r.peak_device else None,
            allocated_error=(est.allocated_peak - r.peak_allocated) / r.peak_allocated if r.status == "ok" and r.peak_allocated else None,
            cap_bytes=cap,
            predicted_fits_cap=(est.device_peak <= cap * (1 - margin)) if cap else None,
        )
        rows.append(row)
    return summarise(profile.name, profile.fit.get("scenarios", []), rows)


def error_stats(rows: list[Row]) -> ErrorStats:
    done = [x for x in rows if x.device_error is not None and x.cap_bytes is None]
    dev = [abs(x.device_error) for x in done]
    alloc = [abs(x.allocated_error) for x in done if x.allocated_error is not None]
    return ErrorStats(
        scenarios=len(done),
        median_device_error=statistics.median(dev) if dev else None,
        max_device_error=max(dev) if dev else None,
        median_allocated_error=statistics.median(alloc) if alloc else None,
        max_allocated_error=max(alloc) if alloc else None,
    )


def summarise(profile: str, fitted_on: list[str], rows: list[Row]) -> Validation:
    allocators = sorted({x.allocator for x in rows}, key=lambda name: name != "default")
    return Validation(
        profile=profile,
        fitted_on=fitted_on,
        rows=sorted(rows, key=lambda x: (x.allocator != "default", x.scenario)),
        allocators={name: error_stats([x for x in rows if x.allocator == name]) for name in allocators},
        false_fits=[x.scenario for x in rows if x.predicted_fits_cap and x.status == "oom"],
    )


def _rounded(stats: ErrorStats) -> dict:
    return {
        "scenarios": stats.scenarios,
        "median_abs_device_error": round(stats.median_device_error, 4),
        "max_abs_device_error": round(stats.max_device_error, 4),
        "median_abs_allocated_error": round(stats.median_allocated_error, 4),
        "max_abs_allocated_error": round(stats.max_allocated_error, 4),
    }


def calibrate(records: list[Measurement], name: str, base: OverheadProfile) -> OverheadProfile:
    """The profile fitted on all records, with the held-out statistics of the same fit (two folds) and the
    safety margin they justify, per allocator setting: the worst held-out under-prediction of peak device
    memory as a share of the estimate's uncertain part (``Estimate.uncertain_bytes``: what is not an exact
    tensor count), rounded up to a whole percent. Plans keep ``safety_margin * uncertain_bytes`` free by default."""
    profile = fit_profile(records, name, base)
    check = cross_validate(records, base)
    held = [row for row in check.rows if row.device_error is not None and row.cap_bytes is None]
    default = [row for row in held if row.allocator == "default"]
    expandable = [row for row in held if row.allocator != "default"]
    validation = {
        "method": "two-fold cross-validation (qplan validate)",
        **_rounded(check.default),
        "worst_device_underprediction": round(max([0.0] + [-row.device_error for row in default]), 4),
        "worst_underprediction_of_uncertain_part": round(_worst_share(default), 4),
    }
    if expandable and profile.expandable_segments is not None:
        validation["expandable_segments"] = {**_rounded(check.allocators["expandable_segments"]),
                                             "worst_underprediction_of_uncertain_part": round(_worst_share(expandable), 4)}
        profile = profile.model_copy(update={"expandable_segments": profile.expandable_segments.model_copy(
            update={"safety_margin": _margin(expandable)})})
    return profile.model_copy(update={"safety_margin": _margin(default), "validation": validation})


def _worst_share(rows: list[Row]) -> float:
    """The worst under-prediction of peak device memory as a share of the estimate's uncertain part."""
    return max([0.0] + [(row.measured_device - row.predicted_device) / row.predicted_uncertain for row in rows])


def _margin(rows: list[Row]) -> float:
    return share_from_worst(_worst_share(rows))
