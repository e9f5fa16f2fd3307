"""``qplan gpus``: the GPU catalogue: card, the MiB nvidia-smi reports (``memory.total``), bf16, and where
the figure comes from."""

from __future__ import annotations

import argparse
import json
import sys

from planner.inputs.gpus import catalog_gpus
from planner.inputs.units import MiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the GPU catalogue: card, MiB as nvidia-smi reports it, bf16, source."
    parser.add_argument("--json", action="store_true", help="one JSON object per card")


def run(args: argparse.Namespace) -> int:
    cards = [{"name": g.name, "label": g.label, "mib": g.total_bytes // MiB, "bf16": g.bf16, "source": g.source}
             for g in catalog_gpus()]
    if args.json:
        sys.stdout.write(json.dumps(cards, indent=1) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="qplan's GPU catalogue (profiles/gpus.json; --gpu NAME)", title_justify="left")
    for column, justify in (("--gpu", "left"), ("card", "left"), ("MiB", "right"), ("bf16", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "card")
    for card in cards:
        table.add_row(card["name"], card["label"], str(card["mib"]), "yes" if card["bf16"] else "no (fp16)")
    Console().print(table)
    return 0
