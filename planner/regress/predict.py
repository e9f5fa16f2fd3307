"""qplan's own predictions for a suite, in the results-file format, so ``qplan regress compare`` can track
the model between qplan versions (prediction vs prediction) or against a GPU run (prediction vs measurement).

Per scenario, from the pricing path (:func:`planner.pricing.price.estimator_for`, the estimator every plan
uses) with the chosen overhead profile, for the scenario's GPU count:
``peak_allocated`` = allocated peak, ``peak_reserved`` = reserved peak, ``peak_device`` = device peak
(reserved + CUDA context + paged optimizer state). A scenario with ``memory_cap_bytes`` whose predicted
device peak exceeds the cap is recorded as ``status: oom`` in its peak phase, as a run on such a card would.
"""

from __future__ import annotations

from planner.results import Measurement, Scenario, Suite
from planner.inputs.units import fmt_gib
from planner.results import ResultsFile, run_info


def predict_scenario(scenario: Scenario, overhead) -> Measurement:
    from planner.inputs.catalog import resolve_model
    from planner.inputs.settings import Parallel
    from planner.pricing.price import estimator_for

    arch = resolve_model(scenario.model)
    parallel = Parallel(gpus=scenario.gpus, cpu_offload=scenario.cpu_offload)
    est = estimator_for(arch, overhead, parallel, None)(scenario.settings)
    cap = scenario.memory_cap_bytes
    oom = cap is not None and est.device_peak > cap
    return Measurement(
        scenario=scenario,
        status="oom" if oom else "ok",
        error=f"predicted device peak {fmt_gib(est.device_peak)} exceeds the {fmt_gib(cap)} cap" if oom else None,
        oom_phase=est.peak_phase if oom else None,
        peak_allocated=est.allocated_peak,
        peak_reserved=est.reserved_peak,
        peak_device=est.device_peak,
        paged_bytes=est.paged,
        trainable_params=est.trainable_params,
        total_params=arch.total_params,
    )


def predict_suite(suite: Suite, *, gpu: str | None = None, profile: str | None = None) -> ResultsFile:
    """Predictions for every scenario; ``gpu`` (a card name or size, as ``qplan --gpu``) picks the overhead
    profile measured on that card, ``profile`` names one outright."""
    from planner.memory.overhead import select_profile

    card = None
    if gpu:
        from planner.inputs.gpus import resolve_gpu

        card = resolve_gpu(gpu)
    overhead = select_profile(card.label if card else None, profile)
    info = run_info(
        "prediction", suite.name, gpu=card.label if card else None,
        overhead_profile=f"{overhead.name} ({overhead.status})",
    )
    return ResultsFile(provenance=info, measurements=[predict_scenario(s, overhead) for s in suite.scenarios])
