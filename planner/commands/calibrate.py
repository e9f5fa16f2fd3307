"""``qplan calibrate RESULTS.jsonl... --name NAME``: fit the overhead terms to measurements and write
``profiles/overhead/NAME.json`` (refuses to replace an existing profile without --force)."""

from __future__ import annotations

import argparse

from planner.fit.calibrate import calibrate, load_measurements, write_profile
from planner.memory.overhead import select_profile
from planner.profiles import profiles_dir
from planner.inputs.units import fmt_gib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Fit CUDA context, driver reserve, fragmentation and backward working set to GPU measurements."
    parser.add_argument("results", nargs="+", help="measurement JSON-lines files from qplan measure")
    parser.add_argument("--name", required=True, help="profile name, e.g. h100-torch2.11")
    parser.add_argument("--force", action="store_true", help="replace an existing profile of that name")


def run(args: argparse.Namespace) -> int:
    records = load_measurements(args.results)
    profile = calibrate(records, args.name, select_profile(name="literature-defaults"))
    path = profiles_dir() / "overhead" / f"{args.name}.json"
    write_profile(profile, path, force=args.force)
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
    return 0
