"""Whether this machine can measure, asked without initialising CUDA, and the entry point of the
``python -m planner.measure.<probe>`` GPU tools: bad input or no GPU is one line and exit 2, as in the CLI."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from planner.errors import QPlanError


def require_cuda(gpus: int = 1, what: str = "qplan measure") -> None:
    """One line and exit 2 when this machine cannot measure (no CUDA, or fewer GPUs than a scenario runs on).
    torch is asked through NVML (``PYTORCH_NVML_BASED_CUDA_CHECK``), so this process does not initialise
    CUDA beside the workers."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        import torch
    except ImportError:
        raise QPlanError(f"{what} needs torch with CUDA (pip install 'qplan[gpu]')") from None
    if not torch.cuda.is_available():
        raise QPlanError(f"{what} needs a CUDA GPU and this machine has none (torch.cuda.is_available() is False)")
    if torch.cuda.device_count() < gpus:
        raise QPlanError(f"a scenario runs on {gpus} GPUs (FSDP) and this machine has {torch.cuda.device_count()}")


def run_tool(main: Callable[[list[str]], int], prog: str, usage: str | None = None) -> int:
    """Run a GPU tool's ``main(argv)``: with ``usage``, at least one argument is needed."""
    argv = sys.argv[1:]
    try:
        if usage and not argv:
            raise QPlanError(f"usage: {prog} {usage}")
        require_cuda(what="this tool")
        return main(argv)
    except QPlanError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
