"""FSDP-QLoRA on several GPUs: the same worker, one process per GPU under ``torch.distributed.run``.

Each rank builds the model on the ``meta`` device with NF4 weights stored as bfloat16
(``bnb_4bit_quant_storage``), attaches LoRA in the model dtype (:func:`planner.memory.fsdp.fsdp_recipe`), and
wraps it as peft's FSDP-QLoRA recipe does: ``FullyShardedDataParallel`` with
``peft.utils.other.fsdp_auto_wrap_policy`` (decoder layers and the LoRA modules as their own units),
``FULL_SHARD``, ``use_orig_params=False``. FSDP makes each unit real on the GPU with random NF4 weights
(``param_init_fn`` = :func:`planner.measure.build.materializer`) and shards it before the next, so no GPU
ever holds the whole model, as with real FSDP-QLoRA loading (rank 0 reads the checkpoint on the CPU and
broadcasts). Then the phase records and NVML peak start over and the memory cap applies: the training
phases are measured as on N cards of that size. A first version built the whole model per GPU and sharded
it afterwards; the freed blocks stayed reserved under the shards (34.8 GiB reserved for 17.7 GiB allocated
on a 70B), which is why the model is now built unit by unit.

Every rank writes its record to ``RESULT.rank<r>``; :func:`merge` keeps the rank with the highest device
peak (any OOM wins), which is what decides whether the run fits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..results import Measurement, Scenario

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


def wrap(model, device, param_init_fn=None):
    """peft's FSDP-QLoRA wrapping; a model on ``meta`` is made real one unit at a time by ``param_init_fn``."""
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    return FullyShardedDataParallel(
        model, auto_wrap_policy=fsdp_auto_wrap_policy(model), sharding_strategy=ShardingStrategy.FULL_SHARD,
        use_orig_params=False, device_id=device, limit_all_gathers=True, param_init_fn=param_init_fn,
    )
