"""qplan measure on a CUDA GPU (skipped without one). The committed device results under
profiles/measurements/ come from the same code: equality-*.json from ``python -m planner.measure.equality``."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_built_model_uses_the_gpu_exactly_as_from_pretrained(tmp_path):
    """Requested bytes after load, after prepare+LoRA, after and at the peak of one step; every tensor and
    attribute. Allocator blocks may differ by the <= 1 MiB a cached block keeps unsplit (see equality.EXACT)."""
    from planner.measure.equality import compare

    report = compare("tinyllama-1.1b", tmp_path / "checkpoint")
    assert report["equal"] == dict.fromkeys(report["equal"], True), report["numbers"]
    numbers = report["numbers"]
    assert numbers["load_requested"]["built"] > 2**29  # TinyLlama in NF4 + bf16 embeddings: about 0.73 GiB
    for phase in ("load", "adapter", "step"):
        assert abs(numbers[f"{phase}_allocated"]["built_minus_from_pretrained"]) <= 16 * 2**20


def test_worker_measures_every_phase_on_the_gpu():
    from planner.inputs.catalog import resolve_model
    from planner.measure.suite import measure_one
    from planner.memory.optimizer import optimizer_memory
    from planner.memory.trainable import trainable_tensors
    from planner.results import PHASES, Scenario

    scenario = Scenario(name="gpu-smoke", model="tinyllama-1.1b",
                        settings={"seq_len": 256, "rank": 64, "grad_accum": 2, "optim": "paged_adamw_8bit"}, steps=2)
    m = measure_one(scenario, timeout=600)
    assert m.status == "ok", m.error
    assert set(m.phases) == set(PHASES)
    assert m.peak_allocated >= m.phases["load"].allocated > 0
    assert m.peak_reserved >= m.peak_allocated
    # r=64: lora_A of down_proj has 64 x 5632 >= 1e5 elements, so bitsandbytes pages its 8-bit state
    assert m.context_bytes > 0 and m.paged_bytes > 0
    settings = scenario.settings
    assert m.paged_bytes == optimizer_memory(settings.optim, trainable_tensors(resolve_model("tinyllama-1.1b"), settings), 4).paged
    assert m.provenance.gpu_total_bytes > 0 and m.provenance.bitsandbytes
