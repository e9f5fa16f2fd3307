"""The analytic path held to the trace (issue 11, "hold the fast path to the trace"): the committed table
``profiles/trace-vs-analytic.json`` (``python tools/trace_vs_analytic.py``: every priced catalogue model at two
settings, traced on the CPU) must show the analytic allocated peak within 1% of the trace, except where this
file names the miss and its cause (strict xfail: once the formula is fixed the test says so). Two rows are
re-traced here, so the table is the current code's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TABLE = json.loads((Path(__file__).parents[1] / "profiles" / "trace-vs-analytic.json").read_text())
ROWS = [row for row in TABLE["rows"] if "difference" in row]
# model -> why the analytic formula misses the trace (not yet fixed)
KNOWN = {
    "gemma-3-1b": "Gemma-3 priced from its text decoder; its sliding/global layers and q/k norms are approximated",
    "gemma-3-4b": "Gemma-3 (as above)",
    "gemma-3-12b": "Gemma-3 (as above)",
    "gemma-3-27b": "Gemma-3 (as above)",
    "phi-3-mini-4k": "Phi-3 at seq_len 2048 with sdpa: the trace holds more in the fused qkv/gate_up backward than the formula",
}


def test_the_table_covers_the_catalogue():
    from planner.inputs.catalog import catalog_models

    traced = {row["model"] for row in TABLE["rows"]}
    assert traced == {entry.slug for entry in catalog_models()}
    assert len(ROWS) >= 60


def test_what_cannot_be_traced_yet_is_named():
    """Rows without a trace say why; today: Gemma-2 without checkpointing (its 2- and 3-layer traces do not
    extend) and the two MoE models (an fp32 matmul in the expert path under fake autocast)."""
    missing = {(row["model"], row.get("settings", {}).get("gradient_checkpointing")) for row in TABLE["rows"]
               if "unavailable" in row}
    assert {model for model, _ in missing} == {"gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "mixtral-8x7b", "qwen3-30b-a3b"}
    assert all(checkpointing is False for model, checkpointing in missing if model.startswith("gemma-2"))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['model']}-r{r['settings']['rank']}-s{r['settings']['seq_len']}")
def test_analytic_allocated_peak_is_within_1_percent_of_the_trace(row, request):
    if row["model"] in KNOWN and abs(row["difference"]) > 0.01:
        request.applymarker(pytest.mark.xfail(reason=KNOWN[row["model"]], strict=True))
    assert abs(row["difference"]) <= 0.01


@pytest.mark.parametrize("model", ["llama-3.2-1b", "qwen2.5-0.5b"])
def test_the_table_is_what_the_code_traces_now(model):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    from planner.inputs.catalog import find_entry
    from planner.inputs.settings import TrainSettings
    from planner.memory.runtime import as_run
    from planner.trace import TraceUnavailable, trace_many

    entry = find_entry(model)
    rows = [row for row in ROWS if row["model"] == model]
    many = [as_run(entry.architecture, TrainSettings(**knobs), []) for knobs in
            [{k: v for k, v in row["settings"].items() if k not in ("attn", "lora_dropout")} for row in rows]]
    try:
        traces = trace_many(entry.config, many)
    except TraceUnavailable as error:
        pytest.skip(str(error))
    assert [t.allocated_peak_bytes for t in traces] == [row["allocated_traced"] for row in rows]
