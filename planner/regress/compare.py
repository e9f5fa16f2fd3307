"""Compare two results files scenario by scenario.

For each scenario, with ``b`` and ``n`` the chosen peak metric (bytes) of base and new::

    delta = n - b,   delta % = 100 * delta / b
    allowed = tolerance * b (``2%``)  or  the tolerance itself (``0.5GiB``)
    verdict = REGRESSION  if delta >  allowed          (both runs ok)
              improved    if delta < -allowed
              ok          otherwise
              new-oom     base ok, new out of memory;  fixed: base OOM, new ok;  still-oom: OOM in both
              error       the new run failed (not an OOM)
              missing     no number to compare on one side (scenario absent from new, base failed,
                          metric not recorded);  added: only in new

Exit code: 2 when the files are not comparable (different GPU, or a scenario of the same name defined
differently) unless ``allow_mismatch``; else 1 when any verdict is REGRESSION, new-oom or error; else 0.
Version differences are context, not mismatches: finding what they change is the point of a regression run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, computed_field

from planner.errors import QPlanError
from planner.results import Measurement, Scenario
from planner.inputs.units import fmt_gib, gib, parse_percent, parse_size
from planner.results import ResultsFile, RunInfo

Metric = Literal["peak_device", "peak_reserved", "peak_allocated"]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
METRIC_LABELS = {
    "peak_device": "peak device memory (NVML, what nvidia-smi shows)",
    "peak_reserved": "peak reserved (torch.cuda.max_memory_reserved)",
    "peak_allocated": "peak allocated (torch.cuda.max_memory_allocated)",
}
Verdict = Literal["REGRESSION", "new-oom", "error", "improved", "fixed", "ok", "still-oom", "missing", "added"]
FAILING = ("REGRESSION", "new-oom", "error")
VERSION_FIELDS = ("driver", "cuda", "torch", "transformers", "peft", "bitsandbytes", "accelerate")


class Tolerance(BaseModel):
    text: str
    relative: float | None = None
    absolute: int | None = None

    def allowed(self, base: int) -> float:
        return base * self.relative if self.relative is not None else float(self.absolute or 0)


def parse_tolerance(text: str) -> Tolerance:
    """``2%`` (of the base peak) or an absolute size such as ``0.5GiB`` / ``256MiB``."""
    text = text.strip()
    if text.endswith("%"):
        return Tolerance(text=text, relative=parse_percent(text, what="--tolerance", below=10.0))
    if not any(ch.isalpha() for ch in text):
        raise QPlanError(f"--tolerance {text!r}: say 2% (of the base peak) or 0.5GiB (absolute)")
    return Tolerance(text=text, absolute=parse_size(text, what="--tolerance"))


class Row(BaseModel):
    scenario: str
    model: str
    base_status: str | None = None
    new_status: str | None = None
    base_bytes: int | None = None
    new_bytes: int | None = None
    delta_bytes: int | None = None
    delta_pct: float | None = None
    verdict: Verdict
    note: str = ""

    def cells(self) -> tuple[str, str, str, str]:
        """Base GiB, new GiB, delta GiB, delta % as printed in tables and reports."""

        def side(status: str | None, nbytes: int | None) -> str:
            if status in (None, "error"):
                return status or "-"
            text = "-" if nbytes is None else f"{gib(nbytes):.2f}"
            return f"OOM ({text})" if status == "oom" else text

        delta = "" if self.delta_bytes is None else f"{gib(self.delta_bytes):+.2f}"
        pct = "" if self.delta_pct is None else f"{self.delta_pct:+.1f}%"
        return side(self.base_status, self.base_bytes), side(self.new_status, self.new_bytes), delta, pct


class Difference(BaseModel):
    """Something that makes base and new not like for like. ``blocking`` ones stop the comparison."""

    what: str
    base: str
    new: str
    severity: Literal["blocking", "warning"]


class VersionRow(BaseModel):
    what: str
    base: str
    new: str

    @computed_field
    @property
    def changed(self) -> bool:
        return self.base != self.new


class Comparison(BaseModel):
    base_path: str
    new_path: str
    base: RunInfo
    new: RunInfo
    metric: Metric
    tolerance: str
    allow_mismatch: bool
    rows: list[Row]
    differences: list[Difference]
    versions: list[VersionRow]

    @computed_field
    @property
    def blocked(self) -> bool:
        return any(d.severity == "blocking" for d in self.differences)

    @property
    def changed(self) -> str:
        """``torch 2.13.0 -> 2.14.0, settings.gradient_checkpointing=True -> False (2 scenarios)``: what differs
        between the runs (rows known on one side only, such as library versions of a prediction, are left to
        the table)."""
        known = [f"{v.what} {v.base} -> {v.new}" for v in self.versions if v.changed and "-" not in (v.base, v.new)]
        redefined: dict[str, int] = {}
        for d in self.differences:
            if d.what.startswith("scenario "):
                change = f"{d.base} -> {d.new}"
                redefined[change] = redefined.get(change, 0) + 1
        known += [f"{change} ({n} scenario{'s' * (n > 1)})" for change, n in redefined.items()]
        return ", ".join(known) or "nothing"

    @property
    def any_oom(self) -> bool:
        return any("oom" in (row.base_status, row.new_status) for row in self.rows)

    @computed_field
    @property
    def counts(self) -> dict[str, int]:
        """Scenarios per verdict, in the order of :data:`Verdict`."""
        found = {v: sum(row.verdict == v for row in self.rows) for v in Verdict.__args__}  # type: ignore[attr-defined]
        return {v: n for v, n in found.items() if n}

    @computed_field
    @property
    def exit_code(self) -> int:
        if self.blocked and not self.allow_mismatch:
            return 2
        return 1 if any(row.verdict in FAILING for row in self.rows) else 0

    @computed_field
    @property
    def summary(self) -> str:
        """One line: the verdict, counts per verdict, the worst regression."""
        parts = [f"{n} {verdict}" for verdict, n in self.counts.items()]
        worst = max((r for r in self.rows if r.verdict == "REGRESSION"), key=lambda r: r.delta_bytes or 0, default=None)
        text = ", ".join(parts) + f" (tolerance {self.tolerance}, {self.metric})"
        if worst is not None:
            text += f"; worst regression {worst.scenario}: +{fmt_gib(worst.delta_bytes or 0)} ({worst.delta_pct:+.1f}%)"
        verdict = {0: "no regression", 1: "REGRESSION", 2: "NOT COMPARABLE"}[self.exit_code]
        return f"{verdict}: {text}"


def _status(m: Measurement | None) -> str | None:
    return None if m is None else m.status


def _row(name: str, base: Measurement | None, new: Measurement | None, metric: str, tol: Tolerance) -> Row:
    model = (new or base).scenario.model  # type: ignore[union-attr]
    b = getattr(base, metric) if base is not None else None
    n = getattr(new, metric) if new is not None else None
    row = Row(scenario=name, model=model, base_status=_status(base), new_status=_status(new), base_bytes=b, new_bytes=n, verdict="ok")
    if new is None:
        return row.model_copy(update={"verdict": "missing", "note": "not in new"})
    if base is None:
        return row.model_copy(update={"verdict": "added", "note": "not in base"})
    if new.status == "error":
        return row.model_copy(update={"verdict": "error", "note": f"new run failed: {new.error or 'no message'}"})
    if base.status == "error":
        return row.model_copy(update={"verdict": "missing", "note": f"base run failed: {base.error or 'no message'}"})
    if base.status == "oom" or new.status == "oom":
        verdict = {("ok", "oom"): "new-oom", ("oom", "ok"): "fixed", ("oom", "oom"): "still-oom"}[(base.status, new.status)]
        where = new if new.status == "oom" else base
        note = f"OOM in {where.oom_phase}" if where.oom_phase else ""
        return row.model_copy(update={"verdict": verdict, "note": note})
    if b is None or n is None:
        side = "base" if b is None else "new"
        return row.model_copy(update={"verdict": "missing", "note": f"{metric} not recorded in {side}"})
    delta = n - b
    allowed = tol.allowed(b)
    verdict = "REGRESSION" if delta > allowed else "improved" if delta < -allowed else "ok"
    pct = 100.0 * delta / b if b else None
    return row.model_copy(update={"delta_bytes": delta, "delta_pct": pct, "verdict": verdict})


def _flat(scenario: Scenario) -> dict:
    data = scenario.model_dump()
    settings = data.pop("settings")
    return {**data, **{f"settings.{key}": value for key, value in settings.items()}}


def scenario_changes(base: Scenario, new: Scenario) -> list[tuple[str, object, object]]:
    """``(field, base value, new value)`` for every field that differs; settings fields as ``settings.x``."""
    a, b = _flat(base), _flat(new)
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def _differences(base: ResultsFile, new: ResultsFile) -> list[Difference]:
    bp, np_ = base.provenance, new.provenance
    out: list[Difference] = []
    if bp.kind == np_.kind == "measurement":
        be, ne = bp.environment, np_.environment
        if be is None or ne is None:
            out.append(Difference(what="GPU", base=_gpu(bp), new=_gpu(np_), severity="warning"))
        elif (be.gpu_name, be.gpu_total_bytes) != (ne.gpu_name, ne.gpu_total_bytes):
            out.append(Difference(what="GPU", base=_gpu(bp), new=_gpu(np_), severity="blocking"))
    elif bp.kind != np_.kind:
        out.append(Difference(what="kind", base=f"{bp.kind} ({_gpu(bp)})", new=f"{np_.kind} ({_gpu(np_)})", severity="warning"))
    if bp.suite != np_.suite:
        out.append(Difference(what="suite", base=str(bp.suite), new=str(np_.suite), severity="warning"))
    b_names, n_names = base.by_name(), new.by_name()
    only_base = [name for name in b_names if name not in n_names]
    only_new = [name for name in n_names if name not in b_names]
    if only_base or only_new:
        out.append(Difference(
            what="scenario set",
            base=f"{len(only_base)} only here: {', '.join(only_base)}" if only_base else "-",
            new=f"{len(only_new)} only here: {', '.join(only_new)}" if only_new else "-",
            severity="warning",
        ))
    for name, bm in b_names.items():
        nm = n_names.get(name)
        if nm is not None and nm.scenario != bm.scenario:
            changes = scenario_changes(bm.scenario, nm.scenario)
            out.append(Difference(
                what=f"scenario {name!r}", base=", ".join(f"{k}={v!r}" for k, v, _ in changes),
                new=", ".join(f"{k}={v!r}" for k, _, v in changes), severity="blocking",
            ))
    return out


def describe(info: RunInfo) -> str:
    """``measurement, 2026-11-20T10:00:00+00:00`` - what a file holds and when it was made."""
    return f"{info.kind}, {info.date or 'date unknown'}"


def _gpu(info: RunInfo) -> str:
    env = info.environment
    if env is not None:
        return f"{env.gpu_name}, {fmt_gib(env.gpu_total_bytes)}"
    return f"predicted for {info.gpu}" if info.gpu else "unknown GPU"


def _versions(bp: RunInfo, np_: RunInfo) -> list[VersionRow]:
    def row(what: str, get) -> VersionRow:
        return VersionRow(what=what, base=str(get(bp) or "-"), new=str(get(np_) or "-"))

    rows = [
        row("kind", lambda p: p.kind),
        row("GPU", _gpu),
        row("qplan", lambda p: p.qplan_version),
        row("qplan commit", lambda p: p.qplan_git and p.qplan_git.label()),
    ]
    rows += [row(name, lambda p, name=name: getattr(p.environment, name, None)) for name in VERSION_FIELDS]
    if bp.script or np_.script:
        rows.append(row("script", lambda p: p.script.path if p.script else None))
        rows.append(row("script commit", lambda p: p.script and p.script.git and p.script.git.label()))
    if bp.overhead_profile or np_.overhead_profile:
        rows.append(row("overhead profile", lambda p: p.overhead_profile))
    return rows


def _require_metric(results: ResultsFile, metric: str, path: str) -> None:
    ok = [m for m in results.measurements if m.status == "ok"]
    if ok and all(getattr(m, metric) is None for m in ok):
        recorded = [name for name in METRICS if any(getattr(m, name) is not None for m in ok)]
        hint = f"; it has {', '.join(recorded)} (--metric)" if recorded else ""
        raise QPlanError(f"{path} records no {metric} for any scenario{hint}")


def compare(
    base: ResultsFile, new: ResultsFile, *, metric: str = "peak_device", tolerance: str = "2%",
    allow_mismatch: bool = False, base_path: str = "base", new_path: str = "new",
) -> Comparison:
    if metric not in METRICS:
        raise QPlanError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    tol = parse_tolerance(tolerance)
    _require_metric(base, metric, base_path)
    _require_metric(new, metric, new_path)
    b_names, n_names = base.by_name(), new.by_name()
    if not set(b_names) & set(n_names):
        raise QPlanError(f"{base_path} and {new_path} have no scenario in common: nothing to compare "
                         f"({len(b_names)} and {len(n_names)} scenarios)")
    names = list(b_names) + [name for name in n_names if name not in b_names]
    return Comparison(
        base_path=base_path, new_path=new_path, base=base.provenance, new=new.provenance, metric=metric,
        tolerance=tol.text, allow_mismatch=allow_mismatch,
        rows=[_row(name, b_names.get(name), n_names.get(name), metric, tol) for name in names],
        differences=_differences(base, new), versions=_versions(base.provenance, new.provenance),
    )
