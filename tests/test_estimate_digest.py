"""Estimates are byte-identical across refactors: every catalogue model x 4 cards x several knob settings,
each plan as JSON, hashed against the committed digest ``tests/fixtures/estimate_grid.sha256``.

A change that moves a number on purpose regenerates the digest (``python tests/test_estimate_digest.py``)
and says why in its commit."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

DIGEST = Path(__file__).parent / "fixtures" / "estimate_grid.sha256"
CARDS = ("rtx3090", "a6000", "a100-80gb", "t4")
SEARCHED_MODELS = ("7b", "70b", "llama-3.1-8b", "qwen2.5-7b", "mixtral-8x7b", "gemma-2-9b")
EXAMPLES = Path(__file__).parents[1] / "examples"
KNOBS = (
    {"rank": 16, "seq_len": 1024, "batch": 1},
    {"rank": 64, "seq_len": 2048, "batch": 2, "optim": "paged_adamw_8bit", "gradient_checkpointing": False},
    {"rank": 8, "seq_len": 512, "batch": 4, "optim": "adamw_torch", "attn": "eager", "expandable_segments": True},
)


def grid_digest() -> str:
    from planner.inputs.catalog import catalog_models
    from planner.inputs.config_file import load_config_file
    from planner.preflight import check, run_from_config
    from planner.pricing.price import Request, make_plan
    from planner.inputs.settings import TrainSettings

    lines = []
    for entry in catalog_models():
        for card in CARDS:
            for knobs in KNOBS:
                knobs = {**knobs, "seq_len": min(knobs["seq_len"], entry.architecture.max_positions)}
                plan = make_plan(Request(model=entry.slug, gpu=card, settings=TrainSettings(**knobs),
                                         fixed=set(knobs), top=3))
                lines.append(json.dumps(plan.model_dump(mode="json"), sort_keys=True))
    for model in SEARCHED_MODELS:
        for card in ("rtx4090", "a100-80gb"):
            plan = make_plan(Request(model=model, gpu=card, top=5))
            lines.append(json.dumps(plan.model_dump(mode="json"), sort_keys=True))
    for config in sorted(EXAMPLES.glob("*.yaml")):
        for gpu in ("24GB", "48GB", "80GB"):
            result = check(run_from_config(load_config_file(config).model_copy(update={"gpu": gpu})))
            lines.append(json.dumps({"plan": result.plan.model_dump(mode="json"),
                                     "suggestion": result.suggestion and result.suggestion.model_dump(mode="json")},
                                    sort_keys=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_estimate_grid_is_unchanged():
    assert grid_digest() == DIGEST.read_text().strip()


if __name__ == "__main__":
    DIGEST.write_text(grid_digest() + "\n")
    print(DIGEST.read_text(), file=sys.stderr)
