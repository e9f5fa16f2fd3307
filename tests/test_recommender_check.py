"""The recommender against real training under a card-sized memory cap (H200 device run of 2026-11-29,
profiles/measurements/recommender-check-h200.jsonl). The runs are plans qplan recommended for a 24 GB and a
48 GB card at commit affb581; they trained, and qplan still calls them fitting. The same plans with seq_len
doubled either ran out of memory or qplan says they do not fit."""

import pytest

from planner.calibrate import load_measurements
from planner.catalog import resolve_model
from planner.memory.overhead import select_profile
from planner.planning import Request, estimator_for, make_plan
from planner.settings import Parallel
from planner.profiles import profiles_dir

RECORDS = {r.scenario.name: r for r in load_measurements([profiles_dir() / "measurements" / "recommender-check-h200.jsonl"])}
CARDS = {"rec24": ("llama-3.1-8b", "24GB"), "rec48": ("llama-2-70b", "48GB")}


def fits_under_cap(record) -> bool:
    """qplan's verdict for the run on a card whose usable memory is the cap, with the default margin."""
    est = estimator_for(resolve_model(record.scenario.model), select_profile(), Parallel(), None)(record.scenario.settings)
    return est.required_bytes <= record.scenario.memory_cap_bytes


@pytest.mark.parametrize("card", sorted(CARDS))
def test_recommended_plan_trained_and_still_fits(card):
    model, gpu = CARDS[card]
    (record,) = [r for name, r in RECORDS.items() if name.startswith(card) and not name.endswith("seqx2")]
    plan = make_plan(Request(model=model, gpu=gpu))
    assert record.scenario.memory_cap_bytes == plan.gpu.usable_bytes
    assert record.status == "ok" and record.peak_device <= record.scenario.memory_cap_bytes
    assert fits_under_cap(record)
    assert plan.recommendations and plan.recommendations[0].settings.seq_len >= record.scenario.settings.seq_len


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_no_run_qplan_calls_fitting_ran_out_of_memory(name):
    record = RECORDS[name]
    if fits_under_cap(record):
        assert record.status == "ok"
    if name.endswith("seqx2"):
        assert record.status == "oom" or not fits_under_cap(record)
