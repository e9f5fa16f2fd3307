"""``python -m planner.measure.paged OUT.json``: how much device memory bitsandbytes' paged optimizer state
really takes once resident, against the bytes of its tensors (``planner.memory.optimizer``).

For each case, fp32 parameters of the model's LoRA shapes (``planner.memory.trainable.trainable_tensors``)
get random gradients and one ``PagedAdamW`` step, which creates the paged state (``cudaMallocManaged``)
and touches it on the GPU. Resident managed memory = growth of NVML device-used minus growth of the torch
allocator's reserved bytes. No model is built, so each case takes seconds.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from planner.inputs.catalog import resolve_model
from planner.memory.trainable import trainable_tensors
from planner.inputs.settings import TrainSettings
from planner.measure.cuda import run_tool
from planner.measure.nvml import Nvml
from planner.profiles import load_profile_json

CASES = [(case["model"], case["rank"], case["optim"]) for case in load_profile_json("probes.json")["paged"]]


def probe(model: str, rank: int, optim: str, nvml: Nvml) -> dict:
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import GlobalPageManager

    shapes = trainable_tensors(resolve_model(model), TrainSettings(rank=rank, optim=optim))
    params = [torch.nn.Parameter(torch.zeros(rows, cols, device="cuda")) for rows, cols, copies in shapes for _ in range(copies)]
    for p in params:
        p.grad = torch.randn_like(p)
    cls = bnb.optim.PagedAdamW32bit if optim == "paged_adamw_32bit" else bnb.optim.PagedAdamW8bit
    optimizer = cls(params, lr=1e-4)
    torch.cuda.synchronize()
    before, reserved = nvml.used(), torch.cuda.memory_reserved()
    optimizer.step()
    torch.cuda.synchronize()
    grown = nvml.used() - before - (torch.cuda.memory_reserved() - reserved)
    states = [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    paged = [t for t in states if getattr(t, "is_paged", False)]
    row = {"model": model, "rank": rank, "optim": optim, "tensors": len(params), "paged_tensors": len(paged),
           "paged_bytes": sum(t.nbytes for t in paged), "resident_growth": grown,
           "paged_sizes": sorted({t.nbytes for t in paged})}
    del optimizer, states, paged, params
    GlobalPageManager.get_instance().paged_tensors.clear()  # the managed memory itself is never freed
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    import torch

    out = Path((argv if argv is not None else sys.argv[1:])[0])
    torch.cuda.init()
    nvml = Nvml(torch.cuda.current_device())
    rows = []
    for model, rank, optim in CASES:
        rows.append(probe(model, rank, optim, nvml))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "paged_sizes"}), flush=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "python -m planner.measure.paged", "OUT.json"))
