"""``qplan models``: the model catalogue, one row per entry: its aliases, parameters (transformers'
meta-device count), vocabulary, context, family, and whether qplan prices it exactly or refuses it (and why)."""

from __future__ import annotations

import argparse
import json
import sys

from planner.inputs.catalog import aliases_of, catalog_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the model catalogue: aliases, parameters, vocabulary, context, family, priced or refused."
    parser.add_argument("--json", action="store_true", help="one JSON object per model")


def rows() -> list[dict]:
    out = []
    for entry in catalog_models(refused=True):
        config = entry.config.get("text_config", entry.config)
        arch = entry.priced  # its own reading of the config (class defaults filled in); None when refused
        out.append({
            "slug": entry.slug, "aliases": aliases_of(entry.slug), "params": entry.params, "family": entry.family,
            "vocab": arch.vocab if arch else config.get("vocab_size"),
            "context": arch.max_positions if arch else config.get("max_position_embeddings"),
            "hf_id": entry.hf_id, "priced": entry.refusal is None, "refusal": entry.refusal,
        })
    return out


def run(args: argparse.Namespace) -> int:
    models = rows()
    if args.json:
        sys.stdout.write(json.dumps(models, indent=1) + "\n")
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="qplan's model catalogue (profiles/models/; qplan models --json has every alias and the "
                  "refusals)", title_justify="left", box=box.SIMPLE_HEAD)
    for column, justify in (("model", "left"), ("params", "right"), ("vocab", "right"), ("context", "right"),
                            ("family", "left"), ("priced", "left"), ("short names", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "short names")
    for m in models:
        short = [alias for alias in m["aliases"] if "/" not in alias and alias != m["slug"]][:3]
        table.add_row(m["slug"], f"{m['params'] / 1e9:.2f} B", str(m["vocab"]), str(m["context"]), m["family"],
                      "exact" if m["priced"] else "refused", ", ".join(short))
    Console().print(table)
    return 0
