"""``python -m planner.allocator replay FILE``: replay a memory snapshot's history of one device through
the simulated allocator and print its peaks (``--json`` for a JSON object). With ``--sidecar`` the
settings and the empty_cache / memory-fraction calls come from the history's sidecar JSON, and torch's
recorded peaks are printed beside the simulated ones. Bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import QPlanError
from .config import AllocatorConfig
from .replay import simulate
from .sidecar import read_sidecar
from .snapshot import load_events

GiB = 1 << 30


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise QPlanError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m planner.allocator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    replay = commands.add_parser("replay", help="replay a torch.cuda.memory._dump_snapshot pickle (.gz allowed)")
    replay.add_argument("file")
    replay.add_argument("--device", type=int, default=0, help="which device's trace (default 0)")
    replay.add_argument("--expandable-segments", action="store_true", help="as expandable_segments:True")
    replay.add_argument("--alloc-conf", default=None, help="a PYTORCH_CUDA_ALLOC_CONF string")
    replay.add_argument("--cap-bytes", type=int, default=None,
                        help="set_per_process_memory_fraction's limit in bytes (fraction x device total)")
    replay.add_argument("--device-total-bytes", type=int, default=None,
                        help="the device's memory (sizes expandable segments' address space)")
    replay.add_argument("--sidecar", default=None,
                        help="the history's sidecar JSON (qplan measure --history-dir): settings and calls from it")
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _config(args: argparse.Namespace) -> AllocatorConfig:
    fields = {"cap_bytes": args.cap_bytes}
    if args.expandable_segments:
        fields["expandable_segments"] = True
    if args.device_total_bytes is not None:
        fields["device_total_bytes"] = args.device_total_bytes
    for name in ("cap_bytes", "device_total_bytes"):
        if fields.get(name) is not None and fields[name] <= 0:
            raise QPlanError(f"--{name.replace('_', '-')} must be positive")
    return AllocatorConfig.from_conf(args.alloc_conf, **fields)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    recorded, inserts = {}, None
    if args.sidecar:
        if args.expandable_segments or args.alloc_conf or args.cap_bytes or args.device_total_bytes:
            raise QPlanError("--sidecar gives the settings: leave out --expandable-segments, --alloc-conf, "
                             "--cap-bytes and --device-total-bytes")
        sidecar = read_sidecar(args.sidecar)
        config, inserts = sidecar.config(), sidecar.inserts()
        recorded = {"torch_reserved_peak_bytes": sidecar.max_memory_reserved,
                    "torch_allocated_peak_bytes": sidecar.max_memory_allocated}
    else:
        config = _config(args)
    events = load_events(args.file, args.device, inserts)
    start = time.perf_counter()
    result = simulate(events, config)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({**result.to_dict(), **recorded, "replay_seconds": round(seconds, 3)}))
        return 0
    print(f"{args.file} (device {args.device}): {result.events} events replayed in {seconds:.2f} s")
    for name, simulated in (("reserved", result.reserved_peak_bytes), ("allocated", result.allocated_peak_bytes)):
        torch_peak = recorded.get(f"torch_{name}_peak_bytes")
        versus = f"; torch {torch_peak:,} ({simulated / torch_peak - 1:+.3%})" if torch_peak else ""
        print(f"  max_memory_{name:<9} {simulated:>16,} bytes ({simulated / GiB:.3f} GiB){versus}")
    print(f"  segments at the end {result.segments} (peak {result.segments_peak}); "
          f"{result.device_allocs} device allocations, {result.device_frees} releases, "
          f"{result.alloc_retries} release-and-retry, {result.ooms} OOM")
    if result.warning:
        print(f"  warning: {result.warning}")
    return 0

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except QPlanError as err:
        print(f"python -m planner.allocator: error: {err}", file=sys.stderr)
        sys.exit(2)
