"""Several GPUs: the per-GPU estimates (planner/memory/parallel.py), their measured terms recomputed from the
committed two-GPU runs, and the CLI options."""

from __future__ import annotations

import json
import statistics

import pytest

from planner.fit.calibrate import load_measurements
from planner.inputs.catalog import resolve_model
from planner.cli import main
from planner.memory.estimate import estimate
from planner.memory.overhead import select_profile
from planner.memory.parallel import NCCL_BYTES, OFFLOAD_CACHE_BYTES, QUANT_STATE, parallel_estimate
from planner.pricing.price import estimator_for
from planner.profiles import profiles_dir
from planner.inputs.settings import Parallel, TrainSettings
from planner.inputs.units import MiB

MEASURED = profiles_dir() / "measurements"
SETTINGS = TrainSettings(rank=16, seq_len=1024, batch=1, optim="adamw_torch")


def fsdp_runs():
    return [m for m in load_measurements([MEASURED / "fsdp-x2-h200.jsonl"]) if m.scenario.gpus > 1]


def per_gpu(m):
    scenario = m.scenario
    return parallel_estimate(resolve_model(scenario.model), scenario.settings, select_profile(),
                             Parallel(gpus=scenario.gpus, cpu_offload=scenario.cpu_offload))


def test_nccl_term_is_the_measured_non_torch_difference():
    """Non-torch memory (NVML peak - torch peak reserved) of the FSDP runs less that of single-H200 runs."""
    fsdp = statistics.median(m.peak_device - m.peak_reserved for m in fsdp_runs() if not m.scenario.cpu_offload)
    single = statistics.median(m.peak_device - m.peak_reserved - m.paged_bytes
                               for m in load_measurements([MEASURED / "recommender-check-h200.jsonl"])
                               if m.status == "ok")
    assert abs((fsdp - single) - NCCL_BYTES) < MiB


def test_offload_cache_term_is_the_largest_measured_reserved_excess():
    runs = [m for m in fsdp_runs() if m.scenario.cpu_offload and m.status == "ok"]
    assert len(runs) == 2
    excess = max(m.peak_reserved - (per_gpu(m).reserved_peak - OFFLOAD_CACHE_BYTES) for m in runs)
    assert abs(excess - OFFLOAD_CACHE_BYTES) < MiB


def test_committed_fsdp_runs_are_predicted_within_5_percent():
    """Every completed two-GPU run: peak device and peak allocated within 5% (README table)."""
    done = [m for m in fsdp_runs() if m.status == "ok"]
    assert len(done) == 6
    for m in done:
        est = per_gpu(m)
        assert abs(est.device_peak / m.peak_device - 1) <= 0.05, m.scenario.name
        assert abs(est.allocated_peak / m.peak_allocated - 1) <= 0.05, m.scenario.name


def test_readme_quotes_the_two_gpu_errors():
    from pathlib import Path

    errors = sorted(abs(per_gpu(m).device_peak / m.peak_device - 1) for m in fsdp_runs() if m.status == "ok")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"median error is {100 * statistics.median(errors):.1f}% and the largest {100 * errors[-1]:.1f}%" in readme
    assert f"NCCL: {NCCL_BYTES // MiB} MiB" in readme and f"{OFFLOAD_CACHE_BYTES // MiB} MiB more reserved" in readme


@pytest.mark.parametrize("m", [m for m in fsdp_runs() if m.scenario.memory_cap_bytes], ids=lambda m: m.scenario.name)
def test_no_false_fit_under_the_committed_caps(m):
    """A run that went out of memory under its cap is never one qplan calls fitting on that card."""
    scenario = m.scenario
    parallel = Parallel(gpus=scenario.gpus, cpu_offload=scenario.cpu_offload)
    est = estimator_for(resolve_model(scenario.model), select_profile(), parallel, None)(scenario.settings)
    assert m.status == "ok" or est.required_bytes > scenario.memory_cap_bytes


def test_the_capped_two_gpu_runs_include_one_that_ran_out():
    assert any(m.status == "oom" for m in fsdp_runs() if m.scenario.memory_cap_bytes)


def test_quant_state_is_not_sharded():
    """FSDP shards parameters only; bitsandbytes keeps the quant_state on the module, whole on every GPU."""
    arch = resolve_model("llama-2-70b")
    two, four = (parallel_estimate(arch, SETTINGS, select_profile(), Parallel(gpus=n)) for n in (2, 4))
    assert two.phases["load"][QUANT_STATE] == four.phases["load"][QUANT_STATE] > 0
    assert four.device_peak < two.device_peak


@pytest.mark.parametrize("model", ["llama-2-7b", "llama-2-70b", "llama-3.1-8b"])
def test_strategies_order_as_their_storage_says(model):
    arch, profile = resolve_model(model), select_profile()
    single = estimate(arch, SETTINGS, profile)
    peak = {(s, o): parallel_estimate(arch, SETTINGS, profile, Parallel(gpus=2, strategy=s, cpu_offload=o)).device_peak
            for s, o in [("fsdp", False), ("fsdp", True), ("zero3", False), ("ddp", False), ("device-map", False)]}
    assert peak["ddp", False] > single.device_peak  # a full copy plus buckets and NCCL
    assert peak["fsdp", True] < peak["fsdp", False] < single.device_peak
    assert peak["device-map", False] < single.device_peak


def test_zero3_keeps_an_fp32_master_copy_of_the_adapters():
    """ZeRO's mixed precision: 16-bit adapters and gradients plus an fp32 master copy, all sharded."""
    from planner.memory.parallel import MASTER
    from planner.memory.trainable import trainable_params

    arch = resolve_model("llama-2-70b")
    est = parallel_estimate(arch, SETTINGS, select_profile(), Parallel(gpus=4, strategy="zero3"))
    assert est.phases["optimizer"][MASTER] == 4 * trainable_params(arch, SETTINGS) // 4


def test_offload_needs_host_memory_and_only_offload_says_so():
    arch, profile = resolve_model("llama-2-70b"), select_profile()
    on = parallel_estimate(arch, SETTINGS, profile, Parallel(gpus=2, cpu_offload=True))
    off = parallel_estimate(arch, SETTINGS, profile, Parallel(gpus=2))
    assert off.host_bytes == 0 and on.host_bytes > 60 * 2**30  # two ranks' 4-bit shards + rank 0's staged copy


def test_offload_needs_a_sharded_strategy():
    with pytest.raises(ValueError, match="fsdp and zero3"):
        Parallel(gpus=2, strategy="ddp", cpu_offload=True)
    with pytest.raises(ValueError):
        Parallel(gpus=1, cpu_offload=True)


@pytest.mark.parametrize("strategy", ["fsdp", "zero3", "ddp", "device-map"])
def test_cli_plans_each_strategy_with_a_launch_line(capsys, strategy):
    assert main(["--model", "70b", "--gpu", "48GB", "--gpus", "2", "--strategy", strategy, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parallel"]["strategy"] == strategy and plan["parallel"]["launch"]
    assert plan["parallel"]["status"].startswith("measured") == (strategy == "fsdp")


def test_cli_refuses_offload_on_one_gpu_in_one_line(capsys):
    assert main(["--model", "70b", "--gpu", "24GB", "--cpu-offload"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--cpu-offload" in err


def test_70b_on_one_24gb_card_points_to_more_cards_than_the_run_that_ran_out():
    """The seeds' question: 70B does not fit one 24 GB card. The more-GPUs answer is priced at seq_len 1024,
    which went out of memory on 2 x 24 GB (fsdp2-llama-2-70b-r16-s1024-b1-cap24), so it must ask for more."""
    from planner.pricing.price import PlanRequest, price

    plan = price(PlanRequest.named("70b", "24GB")).plan
    more = next(a for a in plan.alternatives if a.kind == "more-gpus")
    ran_out = next(m for m in fsdp_runs() if m.scenario.name == "fsdp2-llama-2-70b-r16-s1024-b1-cap24")
    assert ran_out.status == "oom" and ran_out.scenario.settings.seq_len == more.detail["settings"]["seq_len"]
    assert not plan.fits and more.detail["gpus"] >= 3 and not more.detail["cpu_offload"]
    assert f"--num_processes {more.detail['gpus']}" in more.detail["launch"]
