"""Measurement records: what a real training run on a GPU used, with the provenance to trust it.

Shared by ``qplan measure`` (writes them, one JSON line per scenario), ``qplan calibrate`` /
``qplan validate`` (fit and check the analytic model) and ``qplan regress`` (compare two runs).
Importing this module needs no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    scenarios: list[Scenario]


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
