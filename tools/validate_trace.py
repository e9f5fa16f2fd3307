"""Held-out check of the traced path against the committed H200 allocator histories: for each history's
scenario (``profiles/suites/new-families.json``), trace the step on the CPU (``planner.trace``), replay the
traced stream through the allocator simulator with the run's allocator setting, and compare with the peaks
torch recorded. Nothing was fitted on these runs. Writes ``profiles/measurements/traced-validation-h200.json``.

    python tools/validate_trace.py          # about 10 s per history on a 2-core machine
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "profiles" / "measurements" / "traced-validation-h200.json"


def rows() -> list[dict]:
    from planner.allocator import AllocatorConfig, simulate
    from planner.inputs.catalog import resolve_model
    from planner.measure.configs import load_config
    from planner.measure.suite import load_suite
    from planner.memory.runtime import as_run
    from planner.trace import trace_step
    from planner.trace.stream import events

    scenarios = {s.name: s for s in load_suite("new-families").scenarios}
    out = []
    for sidecar in sorted((ROOT / "profiles" / "measurements" / "histories").glob("*.json")):
        recorded = json.loads(sidecar.read_text())
        scenario = scenarios[recorded["scenario"]]
        settings = as_run(resolve_model(scenario.model), scenario.settings, [])
        trace = trace_step(load_config(scenario.model), settings, steps=scenario.steps)
        replay = simulate(events(trace.stream), AllocatorConfig.from_conf(recorded.get("alloc_conf")))
        row = {"scenario": scenario.name, "alloc_conf": recorded.get("alloc_conf"), "traced": trace.traced,
               "attn_measured": scenario.settings.attn, "attn_traced": settings.attn,
               "allocated_measured": recorded["max_memory_allocated"], "allocated_traced": trace.allocated_peak_bytes,
               "reserved_measured": recorded["max_memory_reserved"], "reserved_traced": replay.reserved_peak_bytes}
        row["allocated_error"] = row["allocated_traced"] / row["allocated_measured"] - 1
        row["reserved_error"] = row["reserved_traced"] / row["reserved_measured"] - 1
        out.append(row)
        print(f"{row['scenario']:45s} allocated {row['allocated_error']:+.2%} reserved {row['reserved_error']:+.2%}",
              file=sys.stderr)
    return out


def stats(rows: list[dict], key: str) -> dict:
    errors = sorted(abs(r[key]) for r in rows)
    return {"runs": len(errors), "median_abs": statistics.median(errors), "max_abs": errors[-1]}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    found = rows()
    comparable = [r for r in found if r["attn_measured"] == r["attn_traced"]]
    summary = {"default": [r for r in comparable if not r["alloc_conf"]],
               "expandable_segments": [r for r in comparable if r["alloc_conf"]]}
    OUT.write_text(json.dumps({
        "description": __doc__.split("\n\n")[0],
        "gpu": "NVIDIA H200", "versions": {"torch": "2.11.0+cu130 (GPU runs); 2.13.0+cpu (trace)",
                                           "transformers": "5.17.0 (GPU runs); 5.24.0 (trace)"},
        "allocated": stats(comparable, "allocated_error"),
        "reserved": {name: stats(part, "reserved_error") for name, part in summary.items()},
        "left_out": [r["scenario"] for r in found if r not in comparable],
        "rows": found,
    }, indent=1) + "\n")
