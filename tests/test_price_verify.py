"""The verified-top-plan hook of price() (``PlanRequest.verify``, what ``--trace`` plugs in), with a stand-in
verifier whose numbers are the analytic ones plus a known offset: no torch needed."""

from __future__ import annotations

from dataclasses import replace

from planner.errors import QPlanError
from planner.inputs.config_file import load_config_file
from planner.inputs.units import GiB
from planner.memory.estimate import estimate
from planner.preflight import request_from_config
from planner.pricing.price import PlanRequest, price


def offset_verifier(extra: int, calls: list):
    """A verifier that prices like the analytic model, plus ``extra`` bytes on the device."""
    def factory(arch, parallel, profile):
        def many(settings):
            calls.append(len(settings))
            return [replace(est, device_peak=est.device_peak + extra, method="traced")
                    for est in (estimate(arch, s, profile) for s in settings)]
        return many
    return factory


def failing_verifier(arch, parallel, profile):
    def many(settings):
        raise QPlanError("no compiler here")
    return many


def test_the_search_walks_down_past_plans_that_no_longer_fit():
    analytic = price(PlanRequest.named("llama-3.1-8b", "rtx4090", top=5)).plan
    calls: list = []
    tight = analytic.recommendations[0].headroom_bytes + 1  # just enough to push the best plan over
    traced = price(PlanRequest.named("llama-3.1-8b", "rtx4090", top=5, verify=offset_verifier(tight, calls))).plan
    assert traced.method == "traced" and calls[0] == 10  # the best 2 x top candidates, in one call
    assert all(r.headroom_bytes >= 0 for r in traced.recommendations)
    assert traced.recommendations[0].settings != analytic.recommendations[0].settings
    assert traced.peak_bytes == traced.recommendations[0].peak_bytes  # the chosen plan is a verified one
    assert len(calls) == 1  # ... priced once, not traced again


def test_a_trace_that_cannot_run_is_one_note_and_the_analytic_plan():
    analytic = price(PlanRequest.named("llama-3.1-8b", "rtx4090")).plan
    fallback = price(PlanRequest.named("llama-3.1-8b", "rtx4090", verify=failing_verifier)).plan
    assert fallback.method == "analytic" and fallback.peak_bytes == analytic.peak_bytes
    assert [n for n in fallback.notes if n.startswith("trace unavailable")] == [
        "trace unavailable (no compiler here): analytic plan"]


def test_the_smallest_change_is_dropped_when_the_trace_says_it_does_not_fit(tmp_path):
    config = load_config_file("examples/seed_65b_48gb.yaml")
    plain = price(request_from_config(config))
    assert plain.suggestion is not None
    calls: list = []
    request = request_from_config(config)
    request.verify = offset_verifier(plain.suggestion.headroom_bytes + GiB, calls)
    traced = price(request)
    assert traced.suggestion is None and not traced.fits
    assert any("does not fit when priced by traced" in n for n in traced.plan.notes)
