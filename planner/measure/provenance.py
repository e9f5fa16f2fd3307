"""Where a measurement came from: GPU, driver, CUDA, library versions, date, host and git commit."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from planner.results import Provenance
from planner.inputs.settings import ALLOC_CONF
from planner.measure.nvml import Nvml

LIBRARIES = ("transformers", "peft", "bitsandbytes", "accelerate")


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """``QPLAN_GIT_COMMIT`` (set it where the tree travels without ``.git``), else ``git rev-parse HEAD``."""
    if os.environ.get("QPLAN_GIT_COMMIT"):
        return os.environ["QPLAN_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(torch, nvml: Nvml) -> Provenance:
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return Provenance(
        gpu_name=props.name if props else "cpu",
        gpu_total_bytes=nvml.total() or (props.total_memory if props else 0),
        driver=nvml.driver(),
        cuda=torch.version.cuda,
        torch=torch.__version__,
        **{lib: version(lib) for lib in LIBRARIES},
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        git_commit=git_commit(),
        alloc_conf=os.environ.get(ALLOC_CONF) or None,
    )
