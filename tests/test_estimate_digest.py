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


def grid_lines() -> list[str]:
    from planner.inputs.catalog import catalog_models
    from planner.inputs.config_file import load_config_file
    from planner.preflight import request_from_config
    from planner.pricing.price import PlanRequest, price
    from planner.inputs.settings import TrainSettings

    lines = []
    for entry in catalog_models():
        for card in CARDS:
            for knobs in KNOBS:
                knobs = {**knobs, "seq_len": min(knobs["seq_len"], entry.architecture.max_positions)}
                plan = price(PlanRequest.named(entry.slug, card, settings=TrainSettings(**knobs),
                                           fixed=set(knobs), top=3)).plan
                lines.append(json.dumps(plan.model_dump(mode="json"), sort_keys=True))
    for model in SEARCHED_MODELS:
        for card in ("rtx4090", "a100-80gb"):
            plan = price(PlanRequest.named(model, card, top=5)).plan
            lines.append(json.dumps(plan.model_dump(mode="json"), sort_keys=True))
    for config in sorted(EXAMPLES.glob("*.yaml")):
        for gpu in ("24GB", "48GB", "80GB"):
            result = price(request_from_config(load_config_file(config), gpu=gpu))
            lines.append(json.dumps({"plan": result.plan.model_dump(mode="json"),
                                     "suggestion": result.suggestion and result.suggestion.model_dump(mode="json")},
                                    sort_keys=True))
    return lines


def grid_digest() -> str:
    return hashlib.sha256("\n".join(grid_lines()).encode()).hexdigest()


def test_estimate_grid_is_unchanged():
    assert grid_digest() == DIGEST.read_text().strip()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))  # this checkout's planner, not an installed one
    DIGEST.write_text(grid_digest() + "\n")
    print(DIGEST.read_text(), file=sys.stderr)
