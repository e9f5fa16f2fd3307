"""Where a measurement came from: GPU, driver, CUDA, library versions, date, host and git commit."""

from __future__ import annotations

import datetime
import os
import socket
from importlib import metadata

from planner.inputs.settings import ALLOC_CONF
from planner.results import Provenance, qplan_git
from planner.measure.nvml import Nvml

LIBRARIES = ("transformers", "peft", "bitsandbytes", "accelerate")


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """qplan's own commit (:func:`planner.results.qplan_git`: the checkout's HEAD, else ``QPLAN_GIT_COMMIT``)."""
    state = qplan_git()
    return state.commit if state else None


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
