"""FSDP-QLoRA on several GPUs: the same worker, one process per GPU under ``torch.distributed.run``.

Each rank builds the model on the ``meta`` device with NF4 weights stored as bfloat16
(``bnb_4bit_quant_storage``), attaches LoRA in the model dtype (:func:`planner.memory.parallel.fsdp_recipe`), and
wraps it as peft's FSDP-QLoRA recipe does: ``FullyShardedDataParallel`` with
``peft.utils.other.fsdp_auto_wrap_policy`` (decoder layers and the LoRA modules as their own units),
``FULL_SHARD``, ``use_orig_params=False``, and with ``Scenario.cpu_offload`` ``CPUOffload(offload_params=True)``
(Answer.AI's ``--use_cpu_offload``).

Loading follows the real low-memory path (Answer.AI ``train.py``, accelerate's ``cpu_ram_efficient_loading``),
where the quantized model sits in host memory when FSDP wraps it: :func:`stage_on_cpu` quantizes random
weights on the GPU one module at a time and moves each module to the CPU at once; then FSDP moves one unit
at a time to the GPU, flattens and shards it. Then the phase records and NVML peak start over and the memory
cap applies: the training phases are measured as on N cards of that size. Two earlier versions left the
GPU's cache fragmented by the build itself (34.8 and 43.0 GiB reserved under 17.7 GiB of 70B shards): one
built the whole model per GPU, one quantized inside FSDP's ``param_init_fn``, where every 16-bit random
matrix was freed between shards that stayed.

Every rank writes its record to ``RESULT.rank<r>``; :func:`merge` keeps the rank with the highest device
peak (any OOM wins), which is what decides whether the run fits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from planner.results import Measurement, Scenario

STATUS_ORDER = ("ok", "error", "oom")  # the worst status of any rank is the run's


def launch_command(scenario: Scenario, result: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={scenario.gpus}",
            "-m", "planner.measure.worker", "--scenario", scenario.model_dump_json(), "--result", str(result),
            "--device", device]


def rank_path(result: Path, rank: int) -> Path:
    return result.with_name(f"{result.name}.rank{rank}")


def merge(scenario: Scenario, result: Path) -> Measurement | None:
    """One record for the run from the ranks' records: the worst status, then the highest device peak."""
    records = [Measurement.model_validate_json(rank_path(result, r).read_text())
               for r in range(scenario.gpus) if rank_path(result, r).is_file()]
    if not records:
        return None
    worst = max(records, key=lambda m: (STATUS_ORDER.index(m.status), m.peak_device or 0, m.peak_allocated or 0))
    if len(records) < scenario.gpus and worst.status == "ok":
        return worst.model_copy(update={"status": "error", "error": f"only {len(records)} of {scenario.gpus} ranks reported"})
    return worst


def stage_on_cpu(model, device, dtype, log=None) -> None:
    """Make the ``meta`` model real in host memory, as rank 0 holds it before FSDP wraps it: each module
    quantized on ``device`` (:func:`planner.measure.build.materialize_all`) and moved to the CPU before the
    next (``param.data = param.to("cpu")``, as FSDP itself moves tensors; ``Params4bit.to`` takes its
    quant_state along), then the GPU cache emptied."""
    import torch

    from planner.measure.build import materialize_all

    cpu = torch.device("cpu")

    @torch.no_grad()
    def to_cpu(module) -> None:
        for param in module.parameters(recurse=False):
            if param.device != cpu:
                param.data = param.to(cpu)
        for key, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.device != cpu:
                module._buffers[key] = buffer.to(cpu)

    materialize_all(model, device, dtype, log=log, then=to_cpu)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    if log:
        log("model staged in host memory")


def wrap(model, device, cpu_offload: bool = False):
    """peft's FSDP-QLoRA wrapping of a model staged on the CPU: FSDP moves, flattens and shards one unit at a time."""
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import CPUOffload, FullyShardedDataParallel, ShardingStrategy

    return FullyShardedDataParallel(
        model, auto_wrap_policy=fsdp_auto_wrap_policy(model), sharding_strategy=ShardingStrategy.FULL_SHARD,
        use_orig_params=False, device_id=device, limit_all_gathers=True,
        cpu_offload=CPUOffload(offload_params=True) if cpu_offload else None,
    )
