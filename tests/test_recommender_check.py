"""The recommender against real training under a card-sized memory cap (H200). The plans qplan recommends
for a 24 GB and a 48 GB card (profiles/suites/recommender-check.json, device run of 2026-11-30,
profiles/measurements/recommender-check-2-h200.jsonl) trained, and qplan still recommends them; the same
plans with seq_len doubled ran out of memory or qplan says they do not fit. The first check's runs (plans of
commit affb581, 2026-11-29, recommender-check-h200.jsonl) are held to the same rule: no run qplan calls
fitting ran out of memory."""

import pytest

from planner.fit.calibrate import load_measurements
from planner.inputs.catalog import resolve_model
from planner.measure.suite import load_suite
from planner.memory.overhead import select_profile
from planner.pricing.price import PlanRequest, estimator_for, price
from planner.profiles import profiles_dir
from planner.inputs.settings import Parallel

MEASURED = profiles_dir() / "measurements"
RECORDS = {r.scenario.name: r for r in load_measurements([MEASURED / "recommender-check-2-h200.jsonl"])}
FIRST_CHECK = {r.scenario.name: r for r in load_measurements([MEASURED / "recommender-check-h200.jsonl"])}
CARDS = {"rec24": ("llama-3.1-8b", "24GB"), "rec48": ("llama-2-70b", "48GB")}


def fits_under_cap(record) -> bool:
    """qplan's verdict for the run on a card whose usable memory is the cap, with the default margin."""
    est = estimator_for(resolve_model(record.scenario.model), select_profile(), Parallel(), None)(record.scenario.settings)
    return est.required_bytes <= record.scenario.memory_cap_bytes


def test_every_suite_scenario_ran():
    assert sorted(s.name for s in load_suite("recommender-check").scenarios) == sorted(RECORDS)


@pytest.mark.parametrize("card", sorted(CARDS))
def test_recommended_plan_trained_and_is_still_the_recommendation(card):
    model, gpu = CARDS[card]
    (record,) = [r for name, r in RECORDS.items() if name.startswith(card) and not name.endswith("seqx2")]
    plan = price(PlanRequest.named(model, gpu)).plan
    top = plan.recommendations[0].settings
    assert record.scenario.memory_cap_bytes == plan.gpu.usable_bytes
    assert record.status == "ok" and record.peak_device <= record.scenario.memory_cap_bytes
    assert fits_under_cap(record)
    wanted = {"rank": top.rank, "seq_len": top.seq_len, "batch": top.batch, "optim": top.optim}
    assert record.scenario.settings.model_dump(include=set(wanted)) == wanted


@pytest.mark.parametrize("card", sorted(CARDS))
def test_doubled_seq_len_ran_out_of_memory_or_qplan_refuses_it(card):
    (record,) = [r for name, r in RECORDS.items() if name.startswith(card) and name.endswith("seqx2")]
    assert record.status == "oom" or not fits_under_cap(record)


@pytest.mark.parametrize("name", sorted(RECORDS) + sorted(FIRST_CHECK))
def test_no_run_qplan_calls_fitting_ran_out_of_memory(name):
    record = RECORDS.get(name) or FIRST_CHECK[name]
    assert record.status in ("ok", "oom")
    assert record.status == "ok" or not fits_under_cap(record)


def test_the_checks_hold_runs_of_both_outcomes():
    statuses = [r.status for r in (*RECORDS.values(), *FIRST_CHECK.values())]
    assert statuses.count("ok") >= 2 and statuses.count("oom") >= 2
