"""``qplan schema``: the JSON schema of ``qplan --json`` output."""

from __future__ import annotations

import argparse
import json

from planner.output.plan import Plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the JSON schema of the plan that `qplan --json` prints."


def run(args: argparse.Namespace) -> int:
    print(json.dumps(Plan.model_json_schema(), indent=2))
    return 0
