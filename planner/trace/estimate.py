"""The traced estimate: the real training step run on fake CUDA tensors (:mod:`planner.trace`), its request
stream replayed through the caching-allocator simulator (:mod:`planner.allocator`).

    allocated_peak = the trace's peak of live blocks (each request rounded to 512 B)
    reserved_peak  = the simulator's peak of reserved segments for the run's PYTORCH_CUDA_ALLOC_CONF
    device_peak    = reserved_peak + CUDA context (the overhead profile's, measured) + paged optimizer state
                     once resident (planner.memory.optimizer, measured)

No allocator slack is fitted: the simulator follows torch's block choices. The breakdown is what the trace
can name: the traced tensors at the peak, the allocator's slack, the context, the paged state.
"""

from __future__ import annotations

from dataclasses import replace

from planner.inputs.architecture import Architecture
from planner.inputs.settings import TrainSettings
from planner.memory.estimate import Estimate, estimate
from planner.memory.overhead import OverheadProfile
from planner.inputs.settings import Parallel

TRACED = "tensors at the peak (traced on fake CUDA)"


def traced_estimates(arch: Architecture, profile: OverheadProfile, many: list[TrainSettings]) -> list[Estimate]:
    """The traced :class:`Estimate` of each settings, all traced in one child process; raises
    :class:`planner.trace.TraceUnavailable` (a :class:`QPlanError`) when the step cannot be traced."""
    from planner.allocator import AllocatorConfig, simulate
    from planner.inputs.settings import EXPANDABLE
    from planner.trace import trace_many
    from planner.trace.stream import events

    out = []
    for settings, trace in zip(many, trace_many(arch.config, many)):
        config = AllocatorConfig.from_conf(EXPANDABLE if settings.expandable_segments else None)
        reserved = simulate(events(trace.stream), config).reserved_peak_bytes
        analytic = estimate(arch, settings, profile)
        phases = {phase["name"]: {TRACED: phase["peak_rounded"]} for phase in trace.phases}
        peak_phase = max(phases, key=lambda name: phases[name][TRACED])
        out.append(replace(
            analytic, phases=phases, peak_phase=peak_phase, allocated_peak=trace.allocated_peak_bytes,
            reserved_peak=reserved, device_peak=reserved + profile.cuda_context_bytes + analytic.paged,
            exact_bytes=trace.allocated_peak_bytes + analytic.paged, margin_bytes=0, method="traced",
            notes=[*trace.notes, f"traced: {trace.traced}"],
        ))
    return out


def verifier(arch: Architecture, parallel: Parallel, profile: OverheadProfile):
    """The ``PlanRequest.verify`` factory of ``--trace``: several settings traced in one child process."""
    return lambda many: traced_estimates(arch, profile, many)
