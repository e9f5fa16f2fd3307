"""What the CUDA stack adds around the tensors: the CUDA context, cuBLAS workspaces and allocator
fragmentation. These are measured, not derived: each profile in ``profiles/overhead/`` records the GPU,
library versions, date and scenarios it was fitted on (``qplan calibrate``).

    reserved_peak = allocated_peak * (1 + fragmentation_ratio) + fragmentation_bytes
                  + fragmentation_recompute_ratio * S_rec (with gradient checkpointing, else 0)
                  + fragmentation_logits_ratio * 4*T*V

with one set of terms for torch's default caching allocator and one for
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (``expandable_segments``), which grows a segment in place
instead of adding one per size that does not fit, and so leaves far less slack.
    device_peak   = reserved_peak + cuda_context_bytes + paged optimizer state (resident)

Why those two terms: on the H100 the reserved peak is reached in the forward pass. With checkpointing each
layer's no-grad forward allocates and frees a working set the size of its activations, and the caching
allocator keeps those blocks; the logits/cross-entropy buffers that come next are larger and cannot reuse
them. So the slack grows with the per-layer activations and with the logits, not with the frozen weights
(a 70B at seq 512 has 45 GiB allocated and 1 GiB slack; a 7B at 16k tokens has 20 GiB and 6 GiB).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import QPlanError
from planner.files import read_text
from planner.profiles import profiles_dir


class AllocatorSlack(BaseModel):
    """Reserved minus allocated at the peak for one allocator setting (formula in the module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ratio: float = 0.0
    bytes: int = 0
    recompute_ratio: float = 0.0
    logits_ratio: float = 0.0
    safety_margin: float | None = Field(None, description="this allocator's own safety margin (see OverheadProfile)")
    fit: dict = Field({}, description="the measurements these terms were fitted on")

    def slack(self, allocated: int, recomputed_layer: int, fp32_logits: int) -> int:
        return int(self.ratio * allocated + self.recompute_ratio * recomputed_layer + self.logits_ratio * fp32_logits) + self.bytes


class OverheadProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    status: str = Field(description="'calibrated' (fitted on measurements) or 'literature' (not measured here)")
    gpu: str = Field(description="GPU name the values were measured on, '*' for any")
    versions: dict[str, str] = {}
    date: str | None = None
    source: str
    cuda_context_bytes: int = Field(ge=0)
    cublas_workspace_bytes: int = Field(ge=0)
    fragmentation_ratio: float
    fragmentation_bytes: int = 0
    fragmentation_recompute_ratio: float = Field(0.0, description="reserved slack per byte of one checkpointed layer's activations")
    fragmentation_logits_ratio: float = Field(0.0, description="reserved slack per byte of the fp32 logits (4*T*V)")
    driver_reserved_bytes: int = Field(0, ge=0, description="device memory in use before any process starts (NVML)")
    safety_margin: float = Field(0.15, ge=0, le=0.9, description="share of a plan's uncertain part (Estimate.uncertain_bytes) kept "
                                 "free by default: the worst held-out under-prediction as a share of it (qplan calibrate)")
    expandable_segments: AllocatorSlack | None = Field(None, description="slack terms under expandable segments "
                                                      "(None: not measured, the default allocator's terms stand in)")
    validation: dict = Field({}, description="held-out error statistics of this profile's fitting method")
    fit: dict = {}

    def allocator(self, expandable: bool = False) -> AllocatorSlack:
        """The slack terms for torch's default allocator, or for expandable segments where measured."""
        if expandable and self.expandable_segments is not None:
            return self.expandable_segments
        return AllocatorSlack(ratio=self.fragmentation_ratio, bytes=self.fragmentation_bytes,
                              recompute_ratio=self.fragmentation_recompute_ratio, logits_ratio=self.fragmentation_logits_ratio)

    def margin_share(self, expandable: bool = False) -> float:
        """The safety margin (share of a plan's uncertain part) for the allocator setting."""
        terms = self.expandable_segments if expandable else None
        return terms.safety_margin if terms is not None and terms.safety_margin is not None else self.safety_margin

    def reserved(self, allocated: int, recomputed_layer: int = 0, fp32_logits: int = 0, expandable: bool = False) -> int:
        """Peak reserved by the caching allocator for a peak ``allocated`` (formula in the module docstring)."""
        return allocated + self.allocator(expandable).slack(allocated, recomputed_layer, fp32_logits)


def read_profile(path: Path) -> OverheadProfile:
    """One profile file; anything malformed (not UTF-8 or JSON, NaN, the wrong shape) is one clear error."""
    text = read_text(path, "overhead profile")
    try:
        return OverheadProfile.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise QPlanError(f"{path}: not an overhead profile ({where}: {first['msg']})") from None


def available_profiles() -> tuple[list[OverheadProfile], dict[str, str]]:
    """The profiles shipped under ``profiles/overhead/``, and file stem -> error for malformed ones (left
    out of every choice, so a broken file only fails a plan that names it)."""
    profiles, broken = [], {}
    for path in sorted((profiles_dir() / "overhead").glob("*.json")):
        try:
            profiles.append(read_profile(path))
        except QPlanError as err:
            broken[path.stem] = str(err)
    return profiles, broken


def select_profile(gpu_name: str | None = None, name: str | None = None) -> OverheadProfile:
    """The named profile (a shipped name, or the path of a profile file such as ``qplan calibrate`` writes);
    else a calibrated one measured on this GPU model; else the newest calibrated one; else the literature
    defaults."""
    profiles, broken = available_profiles()
    if name:
        for profile in profiles:
            if profile.name == name:
                return profile
        if name in broken:
            raise QPlanError(broken[name])
        if name.endswith(".json") or "/" in name:
            return read_profile(Path(name))
        raise QPlanError(f"no overhead profile named {name!r}; have {', '.join(p.name for p in profiles)}")
    calibrated = sorted((p for p in profiles if p.status == "calibrated"), key=lambda p: p.date or "")
    if gpu_name:
        same_gpu = [p for p in calibrated if p.gpu.lower() == gpu_name.lower()]
        if same_gpu:
            return same_gpu[-1]
    if calibrated:
        return calibrated[-1]
    if not profiles:
        raise QPlanError("no overhead profile found under profiles/overhead/")
    return profiles[0]
