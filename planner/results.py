"""Measurement records: what a real training run on a GPU used, with the provenance to trust it, and the
results file that holds a suite of them.

Shared by ``qplan measure`` (writes them, one JSON line per scenario), ``qplan calibrate`` /
``qplan validate`` (fit and check the analytic model) and ``qplan regress`` (compare two runs).
Importing this module needs no torch.

The results file ``qplan regress`` reads and writes: one suite's measurements (or predictions) plus the
provenance needed to trust a comparison.

Format (``format: "qplan-results/1"``), one JSON document::

    {"format": "qplan-results/1",
     "provenance": {"kind": "measurement" | "prediction", "suite": ..., "date": ISO-8601 UTC,
                    "qplan_version": ..., "qplan_git": {"commit", "dirty"},
                    "environment": planner.results.Provenance (GPU, driver, CUDA, library versions),
                    "script": {"path", "git": {"commit", "dirty"}},
                    "gpu": predictions: the card predicted for, "overhead_profile": predictions only},
     "measurements": [planner.results.Measurement, ...]}

Also read: the JSON-lines form ``qplan measure`` writes (one :class:`~planner.results.Measurement` per
line); its provenance is taken from the measurements, which must agree on GPU and versions.
Scenario names are unique within a file. Files are written through :mod:`planner.files` (whole or not at all) and
never over an existing file unless ``force``.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner import __version__
from planner.errors import QPlanError
from planner.files import read_text, write_file

from planner.inputs.settings import TrainSettings

Phase = Literal["load", "adapter", "forward", "backward", "optimizer"]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]


class Scenario(BaseModel):
    """One training setup to measure: a catalogue model (or config path) plus settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    settings: TrainSettings = TrainSettings()
    memory_cap_bytes: int | None = Field(None, description="emulate a card of this many bytes (device level)")
    steps: int = Field(3, ge=1, description="optimizer steps to run; peaks are taken over all of them")
    trainer: bool = Field(False, description="run through transformers.Trainer instead of the manual loop")
    gpus: int = Field(1, ge=1, le=64, description="GPUs, one process each; more than 1 trains with FSDP-QLoRA "
                      "(planner.measure.fsdp) and the record holds the rank with the highest device peak")
    cpu_offload: bool = Field(False, description="FSDP CPUOffload(offload_params=True): sharded parameters, their "
                              "gradients and the optimizer step live in host memory (needs gpus > 1)")

    @model_validator(mode="after")
    def _offload_needs_fsdp(self):
        if self.cpu_offload and self.gpus < 2:
            raise ValueError("cpu_offload is FSDP's: it needs gpus > 1")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    scenarios: list[Scenario] = Field(min_length=1)


class PhaseMemory(BaseModel):
    """Memory at the end of one phase, and the peaks reached during it (bytes)."""

    allocated: int
    reserved: int
    peak_allocated: int
    peak_reserved: int
    device_used: int | None = Field(None, description="NVML used memory on the device (whole GPU)")
    process_used: int | None = Field(None, description="NVML memory of this process, where the driver reports it")


class Provenance(BaseModel):
    gpu_name: str
    gpu_total_bytes: int
    driver: str | None = None
    cuda: str | None = None
    torch: str
    transformers: str | None = None
    peft: str | None = None
    bitsandbytes: str | None = None
    accelerate: str | None = None
    date: str
    host: str | None = None
    git_commit: str | None = None
    alloc_conf: str | None = None  # PYTORCH_CUDA_ALLOC_CONF of the measuring process; None: the default allocator


class Measurement(BaseModel):
    """The result of running one :class:`Scenario` in a fresh process."""

    scenario: Scenario
    status: Literal["ok", "oom", "error"]
    error: str | None = None
    oom_phase: Phase | None = None
    phases: dict[str, PhaseMemory] = {}
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    peak_device: int | None = Field(None, description="peak NVML device-used minus the device-used before the process started")
    baseline_device: int | None = Field(None, description="NVML device-used before this process touched CUDA")
    context_bytes: int | None = Field(None, description="device-used after CUDA init minus baseline: the CUDA context")
    paged_bytes: int | None = Field(None, description="bytes of bitsandbytes paged (managed) optimizer state")
    trainable_params: int | None = None
    total_params: int | None = None
    step_seconds: float | None = None
    provenance: Provenance | None = None

    @model_validator(mode="after")
    def _physical(self):
        """A completed run's peaks are ones a GPU can show: above zero, reserved at least allocated, none above
        the card's memory (a reader never trusts a made-up or corrupted number)."""
        if self.status != "ok":
            return self
        total = self.provenance.gpu_total_bytes if self.provenance and self.provenance.gpu_total_bytes else None
        for name in ("peak_allocated", "peak_reserved", "peak_device"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or (total and value > total)):
                raise ValueError(f"{name} {value} is not a peak a GPU of {total or 'unknown'} bytes can show")
        if self.peak_allocated and self.peak_reserved and self.peak_reserved < self.peak_allocated:
            raise ValueError("peak_reserved is below peak_allocated")
        return self


FORMAT = "qplan-results/1"
Kind = Literal["measurement", "prediction"]
# Provenance fields that make two measurements the same environment (date, host and commit may differ).
ENVIRONMENT_FIELDS = ("gpu_name", "gpu_total_bytes", "driver", "cuda", "torch", "transformers", "peft", "bitsandbytes", "accelerate")


class GitState(BaseModel):
    commit: str
    dirty: bool | None = Field(False, description="uncommitted changes to the file (or to qplan's planner/ and profiles/); None: unknown")

    def label(self) -> str:
        """``1dd404b3a9c2 (dirty)``: short commit, and whether the tree differed from it."""
        return self.commit[:12] + {True: " (dirty)", False: "", None: " (dirty?)"}[self.dirty]


class ScriptInfo(BaseModel):
    path: str
    git: GitState | None = None


class RunInfo(BaseModel):
    """Where a whole results file came from."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    suite: str | None = None
    date: str | None = Field(None, description="ISO-8601 UTC time the file was made")
    qplan_version: str | None = None
    qplan_git: GitState | None = None
    environment: Provenance | None = Field(None, description="measurements: GPU, driver, CUDA and library versions")
    script: ScriptInfo | None = None
    gpu: str | None = Field(None, description="predictions: the card predicted for (its overhead profile)")
    overhead_profile: str | None = Field(None, description="predictions: overhead profile name and status")

    @property
    def gpu_name(self) -> str | None:
        return self.environment.gpu_name if self.environment else self.gpu


class ResultsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["qplan-results/1"] = FORMAT
    provenance: RunInfo
    measurements: list[Measurement] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self):
        seen: set[str] = set()
        for m in self.measurements:
            if m.scenario.name in seen:
                raise ValueError(f"scenario {m.scenario.name!r} appears twice")
            seen.add(m.scenario.name)
        return self

    def by_name(self) -> dict[str, Measurement]:
        return {m.scenario.name: m for m in self.measurements}


def now_utc() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def git_state(path: Path, *more: Path, toplevel: Path | None = None) -> GitState | None:
    """HEAD of the git work tree holding ``path`` and whether ``path`` (or ``more``) differs from it;
    ``None`` outside git. With ``toplevel``, only when the work tree root is that folder."""
    folder = path if path.is_dir() else path.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if root is None or (toplevel is not None and Path(root).resolve() != toplevel.resolve()):
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--", *(str(p.resolve()) for p in (path, *more)))
    return GitState(commit=commit, dirty=bool(status))


def qplan_git() -> GitState | None:
    """qplan's own commit when it runs from a git checkout (dirty: planner/ or profiles/ changed), else
    ``QPLAN_GIT_COMMIT`` (set where the tree travels without ``.git``, as for ``qplan measure``)."""
    package = Path(__file__).resolve().parent.parent
    state = git_state(package, package.parent / "profiles", toplevel=package.parent)
    if state is None and os.environ.get("QPLAN_GIT_COMMIT"):
        return GitState(commit=os.environ["QPLAN_GIT_COMMIT"], dirty=None)
    return state


def common_environment(measurements: list[Measurement], where: str) -> Provenance | None:
    """The provenance the measurements share; an error when they come from different GPUs or versions."""
    known = [m for m in measurements if m.provenance is not None]
    if not known:
        return None
    first = known[0].provenance
    for m in known[1:]:
        for name in ENVIRONMENT_FIELDS:
            if getattr(m.provenance, name) != getattr(first, name):
                raise QPlanError(
                    f"{where} mixes runs from different environments: {name} is {getattr(first, name)!r} for "
                    f"{known[0].scenario.name!r} but {getattr(m.provenance, name)!r} for {m.scenario.name!r}"
                )
    return first


def _validation_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "document"
    more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"


def _from_json_lines(lines: list[str], path: Path) -> ResultsFile:
    measurements = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            measurements.append(Measurement.model_validate_json(line))
        except ValidationError as err:
            kind = "truncated or malformed JSON" if err.errors()[0]["type"] == "json_invalid" else "not a measurement"
            raise QPlanError(f"{path}: line {number}: {kind}: {_validation_line(err)}") from None
    environment = common_environment(measurements, str(path))
    run = RunInfo(kind="measurement", date=environment.date if environment else None, environment=environment)
    try:
        return ResultsFile(provenance=run, measurements=measurements)
    except ValidationError as err:
        raise QPlanError(f"{path}: {_validation_line(err)}") from None


def load_results(path: str | Path) -> ResultsFile:
    """Read a results file (document or JSON lines); any problem is one :class:`QPlanError` line."""
    path = Path(path)
    text = read_text(path, "results file")
    if not text.strip():
        raise QPlanError(f"results file {path} is empty")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        lines = text.splitlines()
        if len([line for line in lines if line.strip()]) > 1 and _parses(lines[0]):
            return _from_json_lines(lines, path)
        raise QPlanError(f"{path}: truncated or malformed JSON ({err})") from None
    if isinstance(document, dict) and "measurements" not in document and "scenario" in document:
        return _from_json_lines(text.splitlines(), path)  # JSON lines holding a single measurement
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise QPlanError(f"{path}: not a qplan results file (format {found!r}, expected {FORMAT!r})")
    try:
        return ResultsFile.model_validate(document)
    except ValidationError as err:
        raise QPlanError(f"{path}: {_validation_line(err)}") from None


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def write_results(path: str | Path, results: ResultsFile, *, force: bool = False) -> Path:
    return write_file(path, results.model_dump_json(indent=1) + "\n", force=force)


def run_info(kind: Kind, suite: str | None, **fields) -> RunInfo:
    """Provenance for a file made now by this qplan."""
    return RunInfo(kind=kind, suite=suite, date=now_utc(), qplan_version=__version__, qplan_git=qplan_git(), **fields)
