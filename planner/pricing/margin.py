"""The safety margin: the one home of how much memory a plan keeps free beside its peak.

- Default: each estimate carries ``ceil(share * uncertain_bytes)``, where ``uncertain_bytes`` is the part of
  its peak that is not an exact tensor count (``Estimate.uncertain_bytes``) and ``share`` the overhead
  profile's, per allocator setting (``OverheadProfile.margin_share``): the worst held-out under-prediction
  as a share of that part, rounded up to a whole percent (:func:`share_from_worst`, applied by
  ``qplan calibrate``). The budget is the card's usable memory.
- ``--margin 5%``: a fixed share of usable memory; the budget is ``usable * (1 - share)`` and estimates carry
  no margin of their own.

A plan fits when ``device_peak + margin_bytes <= budget`` (``Estimate.required_bytes``).
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.inputs.gpus import Gpu
from planner.inputs.units import parse_percent
from planner.memory.estimate import Estimate
from planner.memory.overhead import OverheadProfile
from planner.output.plan import GpuInfo

MAX_SHARE = 0.9
HELP = ("safety margin as a share of usable memory kept free, e.g. 5%%; default: the overhead profile's "
        "share of each plan's estimated (not exactly counted) part, from its held-out validation")


def parse_margin(text: str | None) -> float | None:
    """``--margin``: None (the profile's rule) or a share of usable memory below 90%."""
    return None if text is None else parse_percent(text, what="--margin", below=MAX_SHARE)


def gpu_info(gpu: Gpu, count: int, profile: OverheadProfile, margin: float | None, expandable: bool = False) -> GpuInfo:
    """Usable = nvidia-smi total - driver reserve; the budget and the rule's words per the module doc."""
    usable = gpu.total_bytes - profile.driver_reserved_bytes
    if margin is None:
        allocator = "expandable segments" if expandable and profile.expandable_segments else "default allocator"
        rule = (f"{profile.margin_share(expandable):.0%} of the estimated (not exactly counted) part of each plan, the "
                f"worst held-out under-prediction of profile {profile.name} ({allocator})")
        budget = usable
    else:
        rule, budget = f"{margin:.0%} of usable memory (--margin)", int(usable * (1 - margin))
    return GpuInfo(name=gpu.name, label=gpu.label, count=count, total_bytes=gpu.total_bytes, usable_bytes=usable,
                   budget_bytes=budget, margin_rule=rule, bf16=gpu.bf16, ecc=gpu.ecc)


def with_margin(est: Estimate, profile: OverheadProfile, margin: float | None, expandable: bool) -> Estimate:
    """The estimate carrying its default margin for the run's allocator setting; unchanged under an explicit
    ``margin`` (that one is in the budget)."""
    if margin is not None:
        return est
    return replace(est, margin_bytes=math.ceil(profile.margin_share(expandable) * est.uncertain_bytes))


def share_from_worst(worst_share: float) -> float:
    """The profile's margin share from the worst held-out under-prediction (as a share of the uncertain
    part): rounded up to a whole percent, at least 1%."""
    return max(math.ceil(100 * worst_share) / 100, 0.01)
