"""The plan qplan prints: pydantic models at the output edge (``--json`` and ``qplan schema``) and the
function that fills them from the memory model. Keys are a stable contract documented in the README."""

from __future__ import annotations

from pydantic import BaseModel, Field

from planner.inputs.architecture import Architecture
from planner.memory.estimate import Estimate, estimate
from planner.output.launch import launch_hint
from planner.memory.overhead import OverheadProfile
from planner.memory.parallel import STATUS
from planner.inputs.settings import Parallel, TrainSettings


class ModelInfo(BaseModel):
    name: str
    model_type: str
    params: int
    layers: int
    hidden: int
    vocab: int
    max_positions: int
    tied_embeddings: bool


class GpuInfo(BaseModel):
    name: str
    label: str
    count: int
    total_bytes: int = Field(description="device memory per GPU as nvidia-smi reports it")
    usable_bytes: int = Field(description="total less what the driver keeps (from the overhead profile)")
    budget_bytes: int = Field(description="what peak + margin may reach: usable, or usable less --margin when given")
    margin_rule: str = Field(description="how the safety margin is set")
    bf16: bool
    ecc: str | None = Field(None, description="on/off: the ECC mode total_bytes is for, on a card whose nvidia-smi "
                                              "total depends on it (GDDR with optional ECC); null for other cards")


class ProfileInfo(BaseModel):
    name: str
    status: str
    gpu: str
    date: str | None
    source: str


class Recommendation(BaseModel):
    settings: TrainSettings
    peak_bytes: int
    headroom_bytes: int
    tokens_per_step: int = Field(description="batch * grad_accum * seq_len: tokens per optimizer step")
    strategy: str = "single-gpu"


class Alternative(BaseModel):
    kind: str = Field(description="no-prepare-kbit | larger-gpu | more-gpus | smaller-model")
    summary: str
    peak_bytes: int | None = None
    detail: dict = {}


class ParallelInfo(BaseModel):
    gpus: int
    strategy: str
    cpu_offload: bool
    status: str = Field(description="measured, or an estimate not checked on GPUs")
    host_bytes: int = Field(0, description="host memory the CPU-offloaded state needs, all ranks together")
    launch: str = Field(description="how to launch it so that the run matches this plan")


class Plan(BaseModel):
    method: str = Field("analytic", description="analytic (the memory model's formulas) or traced (the real step "
                        "on fake CUDA tensors, replayed through the caching-allocator simulator)")
    model: ModelInfo
    gpu: GpuInfo
    settings: TrainSettings
    breakdown: dict[str, int] = Field(description="component -> bytes at the peak (device level)")
    phases: dict[str, int] = Field(description="phase -> peak allocated bytes")
    peak_bytes: int = Field(description="device-level peak: what nvidia-smi would show for the process")
    allocated_peak_bytes: int = Field(description="what torch.cuda.max_memory_allocated would show")
    reserved_peak_bytes: int = Field(description="what torch.cuda.max_memory_reserved would show")
    paged_bytes: int = Field(description="paged optimizer state in CUDA managed memory (outside torch stats)")
    peak_phase: str
    trainable_params: int
    margin_bytes: int = Field(description="safety margin kept free beside this plan's peak (gpu.margin_rule)")
    fits: bool
    headroom_bytes: int = Field(description="budget_bytes - peak_bytes - margin_bytes (negative: short by that much)")
    profile: ProfileInfo
    parallel: ParallelInfo | None = Field(None, description="set when the plan is for more than one GPU")
    recommendations: list[Recommendation] = []
    longest_seq_len: Recommendation | None = None
    largest_batch: Recommendation | None = None
    alternatives: list[Alternative] = []
    notes: list[str] = []


def model_info(arch: Architecture) -> ModelInfo:
    return ModelInfo(
        name=arch.name, model_type=arch.model_type, params=arch.total_params, layers=arch.layers,
        hidden=arch.hidden, vocab=arch.vocab, max_positions=arch.max_positions,
        tied_embeddings=arch.tied_embeddings,
    )


def profile_info(profile: OverheadProfile) -> ProfileInfo:
    return ProfileInfo(name=profile.name, status=profile.status, gpu=profile.gpu, date=profile.date, source=profile.source)


def parallel_info(parallel: Parallel, est: Estimate) -> ParallelInfo | None:
    if parallel.gpus == 1:
        return None
    return ParallelInfo(gpus=parallel.gpus, strategy=parallel.strategy, cpu_offload=parallel.cpu_offload,
                        status=STATUS[parallel.strategy], host_bytes=est.host_bytes, launch=launch_hint(parallel))


def plan_from_estimate(
    arch: Architecture, gpu: GpuInfo, settings: TrainSettings, est: Estimate, profile: OverheadProfile,
    parallel: Parallel = Parallel(),
) -> Plan:
    return Plan(
        parallel=parallel_info(parallel, est),
        model=model_info(arch),
        gpu=gpu,
        settings=settings,
        breakdown=est.components,
        phases=est.phase_totals(),
        peak_bytes=est.device_peak,
        allocated_peak_bytes=est.allocated_peak,
        reserved_peak_bytes=est.reserved_peak,
        paged_bytes=est.paged,
        peak_phase=est.peak_phase,
        trainable_params=est.trainable_params,
        margin_bytes=est.margin_bytes,
        fits=est.required_bytes <= gpu.budget_bytes,
        headroom_bytes=gpu.budget_bytes - est.required_bytes,
        profile=profile_info(profile),
        method=est.method,
    )


def single_plan(arch: Architecture, gpu: GpuInfo, settings: TrainSettings, profile: OverheadProfile) -> Plan:
    return plan_from_estimate(arch, gpu, settings, estimate(arch, settings, profile), profile)
