"""The analytic path held to the trace: every catalogue model qplan prices, at a few settings, traced on the
CPU (``planner.trace``) against the analytic allocated peak (``planner.memory.estimate``). Writes
``profiles/trace-vs-analytic.json``, which ``tests/test_trace_vs_analytic.py`` checks (|difference| <= 1%,
or a stated exception).

    python tools/trace_vs_analytic.py                  # about 10 s per model on a 2-core machine
    python tools/trace_vs_analytic.py gemma-2-2b ...   # redo these models' rows only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "profiles" / "trace-vs-analytic.json"
SHOWN = {"rank", "seq_len", "batch", "grad_accum", "optim", "gradient_checkpointing", "attn", "lora_dropout"}
SETTINGS = ({"rank": 16, "seq_len": 2048, "batch": 1, "grad_accum": 2},
            {"rank": 64, "seq_len": 1024, "batch": 2, "grad_accum": 2, "optim": "paged_adamw_8bit", "gradient_checkpointing": False})


def rows(only: set[str] | None = None) -> list[dict]:
    from planner.inputs.catalog import catalog_models
    from planner.inputs.settings import TrainSettings
    from planner.memory.estimate import estimate
    from planner.memory.overhead import select_profile
    from planner.memory.runtime import as_run
    from planner.trace import TraceUnavailable, trace_many

    profile = select_profile()
    out = []
    for entry in catalog_models():
        if only and entry.slug not in only:
            continue
        arch = entry.architecture
        for settings in (as_run(arch, TrainSettings(**knobs), []) for knobs in SETTINGS):
            try:
                (trace,) = trace_many(entry.config, [settings])
            except TraceUnavailable as error:
                out.append({"model": entry.slug, "settings": settings.model_dump(mode="json", include=SHOWN),
                            "unavailable": str(error)})
                print(f"{entry.slug:28s} trace unavailable: {error}", file=sys.stderr)
                continue
            analytic = estimate(arch, settings, profile).allocated_peak
            row = {"model": entry.slug, "settings": settings.model_dump(mode="json", include=SHOWN),
                   "allocated_traced": trace.allocated_peak_bytes, "allocated_analytic": analytic,
                   "difference": analytic / trace.allocated_peak_bytes - 1, "traced": trace.traced}
            out.append(row)
            print(f"{entry.slug:28s} {row['difference']:+.2%}", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    only = set(sys.argv[1:])
    kept = [row for row in json.loads(OUT.read_text())["rows"] if row["model"] not in only] if only else []
    OUT.write_text(json.dumps({"description": __doc__.split("\n\n")[0], "torch": "2.13.0+cpu", "transformers": "5.24.0",
                               "rows": sorted(kept + rows(only or None), key=lambda r: r["model"])}, indent=1) + "\n")
