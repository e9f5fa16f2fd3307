"""The README quotes the tool, not a copy that drifts: each worked example is what qplan prints now
(regenerate with ``python tools/readme_examples.py``), and the prose figures of the several-GPU section are
recomputed from the plans they describe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from planner.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "tools" / "readme_examples.py")
readme_examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_examples)


def test_the_readme_has_worked_examples():
    assert len(readme_examples.blocks(README.read_text())) >= 2


@pytest.mark.parametrize("index", range(2))
def test_each_worked_example_is_what_qplan_prints(index):
    args, written, now = readme_examples.blocks(README.read_text())[index]
    assert written == now, f"README example `qplan {args}` is stale: run python tools/readme_examples.py"


def plan(*args) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--json"]) == 0
    return json.loads(out.getvalue())


def test_the_several_gpu_figures_are_the_tools():
    text = " ".join(README.read_text().split())
    alone = plan("--model", "70b", "--gpu", "24GB")
    more = next(a for a in alone["alternatives"] if a["kind"] == "more-gpus")
    assert more["detail"]["gpus"] == 3 and more["detail"]["settings"]["seq_len"] == 1024
    assert "For a 70B on 24 GB cards that is 3 cards at seq_len 1024." in text
    two = plan("--model", "70b", "--gpu", "24GB", "--gpus", "2")
    assert {(r["settings"]["seq_len"], r["settings"]["rank"]) for r in two["recommendations"]} == {(256, 16), (256, 8)}
    assert "On 2 cards qplan lists seq_len 256 at r=16 or r=8" in text
    offload = plan("--model", "70b", "--gpu", "24GB", "--gpus", "2", "--cpu-offload", "--seq-len", "1024", "--rank", "16",
                   "--optim", "paged_adamw_8bit")
    assert offload["fits"]
    assert (f"2 cards hold r=16 at seq_len 1024 with {offload['peak_bytes'] / 2**30:.2f} GiB per GPU and "
            f"{offload['parallel']['host_bytes'] / 2**30:.1f} GiB of host memory (paged 8-bit AdamW)") in text


def test_the_traced_accuracy_table_is_the_committed_validation():
    """The README's traced rows are recomputed from profiles/measurements/traced-validation-h200.json and the
    runs' measurements: device = simulated reserved + the profile's CUDA context + the paged state's resident
    bytes, as the traced estimate computes it."""
    import statistics

    from planner.fit.calibrate import load_measurements
    from planner.inputs.catalog import resolve_model
    from planner.memory.estimate import estimate
    from planner.memory.overhead import select_profile
    from planner.memory.runtime import as_run

    measured = ROOT / "profiles" / "measurements"
    table = json.loads((measured / "traced-validation-h200.json").read_text())
    runs = {m.scenario.name: m for m in load_measurements([measured / "new-families-h200.jsonl"])}
    profile = select_profile("NVIDIA H200")
    errors: dict[str, dict[str, list[float]]] = {"default": {"traced": [], "analytic": []},
                                                 "expandable": {"traced": [], "analytic": []}}
    for row in table["rows"]:
        if row["scenario"] in table["left_out"]:
            continue
        run = runs[row["scenario"]]
        arch = resolve_model(run.scenario.model)
        analytic = estimate(arch, as_run(arch, run.scenario.settings, []), profile)
        traced = row["reserved_traced"] + profile.cuda_context_bytes + analytic.paged
        side = errors["expandable" if row["alloc_conf"] else "default"]
        side["traced"].append(abs(traced / run.peak_device - 1))
        side["analytic"].append(abs(analytic.device_peak / run.peak_device - 1))

    def cell(values):
        return f"{100 * statistics.median(values):.2f}%", f"{100 * max(values):.1f}%"

    text = README.read_text()
    for name, label in (("default", "default allocator"), ("expandable", "expandable segments")):
        median, worst = cell(errors[name]["traced"])
        assert f"| device peak, traced, {label} | {len(errors[name]['traced'])} | {median} | {worst}" in text
    (dm, dx), (em, ex) = cell(errors["default"]["analytic"]), cell(errors["expandable"]["analytic"])
    assert f"| device peak, analytic, same runs: default / expandable | 10 / 10 | {dm} / {em} | {dx} / {ex} |" in text
    r = table["reserved"]
    assert f"| 10 | {100 * r['default']['median_abs']:.2f}% | {100 * r['default']['max_abs']:.1f}% (Phi-3 eager)" in text
    assert (f"| {r['expandable_segments']['runs']} | {100 * r['expandable_segments']['median_abs']:.2f}% | "
            f"{100 * r['expandable_segments']['max_abs']:.1f}% (Qwen3-8B)") in text
