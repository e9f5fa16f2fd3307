"""How long a plan takes, and how it grows with the search space.

    python examples/benchmark_plan.py            # prints two tables; no GPU, no torch

1. Wall time of the command a user types, ``qplan --model 70b --gpu 24GB`` (a fresh interpreter each time,
   imports included), median of several runs, and ``python -X importtime``'s count of what it imported.
2. In one process: ``price`` with more and more knobs left open to the recommender, the number of
   analytic estimates it evaluated and the time per plan (the estimator is wrapped to count calls).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.pricing import price as planning  # noqa: E402
from planner.pricing.price import PlanRequest, price  # noqa: E402
from planner.inputs.settings import TrainSettings  # noqa: E402

COMMAND = [sys.executable, "-m", "planner.cli", "--model", "70b", "--gpu", "24GB"]
ALL_KNOBS = ("seq_len", "batch", "rank", "optim", "gradient_checkpointing")


def cold_runs(repeat: int = 7) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(COMMAND, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return times


def imported_modules() -> list[str]:
    err = subprocess.run([sys.executable, "-X", "importtime", *COMMAND[1:]], capture_output=True, text=True).stderr
    return [line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:") and "|" in line]


def counted_plan(model: str, gpu: str, open_knobs: tuple[str, ...]) -> tuple[int, float]:
    """(estimates evaluated, seconds) for one plan with only ``open_knobs`` searched."""
    calls = 0
    original = planning.estimator_for

    def counting(*args):
        inner = original(*args)

        def estimator(settings):
            nonlocal calls
            calls += 1
            return inner(settings)
        return estimator

    planning.estimator_for = counting
    try:
        start = time.perf_counter()
        price(PlanRequest.named(model, gpu, settings=TrainSettings(seq_len=1024, batch=1, rank=16),
                                    fixed=set(ALL_KNOBS) - set(open_knobs)))
        return calls, time.perf_counter() - start
    finally:
        planning.estimator_for = original


def main() -> int:
    times = cold_runs()
    modules = imported_modules()
    heavy = [m for m in modules if m.split(".")[0] in ("torch", "transformers", "numpy", "bitsandbytes", "peft")]
    print(f"`{' '.join(['qplan', *COMMAND[3:]])}`: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s over {len(times)} fresh processes; {len(modules)} modules imported, "
          f"heavy ones: {', '.join(heavy) or 'none'}")
    print()
    print("| model on card | knobs searched | estimates | ms per plan |")
    print("|---|---|---:|---:|")
    for model, gpu in (("llama-3.1-8b", "24GB"), ("llama-3.1-8b", "80GB"), ("70b", "48GB")):
        for n in range(len(ALL_KNOBS) + 1):
            knobs = ALL_KNOBS[:n]
            calls, seconds = min((counted_plan(model, gpu, knobs) for _ in range(3)), key=lambda x: x[1])
            print(f"| {model} on {gpu} | {', '.join(knobs) or 'none'} | {calls} | {1000 * seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
