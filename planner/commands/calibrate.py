"""``qplan calibrate RESULTS.jsonl... --name NAME``: fit the overhead terms to measurements and write the
profile to ``--out``, or by default ``$XDG_DATA_HOME/qplan/profiles/NAME.json`` (``~/.local/share/...``),
never into the installed package: plans use it only when asked (``--profile PATH``), so a new profile never
becomes every later plan's default without a word. An existing file is replaced only with ``--force``."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from planner.errors import QPlanError
from planner.files import write_file
from planner.fit.calibrate import calibrate, load_measurements
from planner.inputs.units import fmt_gib
from planner.memory.overhead import select_profile

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Fit CUDA context, driver reserve, fragmentation and backward working set to GPU measurements."
    parser.add_argument("results", nargs="+", help="measurement JSON-lines files from qplan measure")
    parser.add_argument("--name", required=True, help="profile name, e.g. h100-torch2.11 (letters, digits, . _ -)")
    parser.add_argument("--out", type=Path, help="where to write the profile (default: the user data folder)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def user_profile_path(name: str) -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "qplan" / "profiles" / f"{name}.json"


def run(args: argparse.Namespace) -> int:
    if not NAME.fullmatch(args.name):
        raise QPlanError(f"--name {args.name!r}: a profile name is letters, digits, '.', '_' and '-', not a path")
    records = load_measurements(args.results)
    profile = calibrate(records, args.name, select_profile(name="literature-defaults"))
    path = write_file(args.out or user_profile_path(args.name), json.dumps(profile.model_dump(), indent=1) + "\n",
                      force=args.force, inputs=args.results)
    print(
        f"wrote {path}: context+non-torch {fmt_gib(profile.cuda_context_bytes)}, driver reserve "
        f"{fmt_gib(profile.driver_reserved_bytes)}, reserved = allocated + {fmt_gib(profile.fragmentation_bytes)} "
        f"+ {profile.fragmentation_recompute_ratio} x recomputed layer + {profile.fragmentation_logits_ratio} x fp32 logits, "
        f"held-out peak device error median "
        f"{profile.validation['median_abs_device_error']:.1%}, max {profile.validation['max_abs_device_error']:.1%}: "
        f"default safety margin {profile.safety_margin:.0%} of each plan's uncertain part"
    )
    terms, check = profile.expandable_segments, profile.validation.get("expandable_segments")
    if terms is not None and check:
        print(
            f"expandable segments: reserved = allocated x {1 + terms.ratio:.4f} + {terms.logits_ratio} x fp32 logits, "
            f"held-out median {check['median_abs_device_error']:.1%}, max {check['max_abs_device_error']:.1%}: "
            f"safety margin {terms.safety_margin:.0%}"
        )
    print(f"plans use it only when asked: qplan ... --profile {path}")
    return 0
