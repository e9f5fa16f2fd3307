"""``qplan check CONFIG``: pre-flight check of a training config before training: qplan's own (YAML or JSON,
see :mod:`planner.inputs.config_file`) or an axolotl, LLaMA-Factory or ``trl sft`` config
(:mod:`planner.inputs.formats`, detected unless ``--format`` says).

Exit 0: the run fits (headroom printed). Exit 1: it does not; prints why and the smallest change that fits
as a patch to the config (:mod:`planner.preflight` defines "smallest"), or, when nothing on this card fits,
what would (larger card, more GPUs, smaller model). Exit 2: a config qplan cannot read. The config file is
only read, never written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from planner.errors import QPlanError
from planner.inputs.config_file import load_data, parse_config
from planner.inputs.formats import FORMATS, translate
from planner.inputs.gpus import ECC_MODES
from planner.inputs.settings import ALLOC_CONF, EXPANDABLE, expandable_in
from planner.output.emit import EMITTERS as EMIT_FORMATS, emit_plan
from planner.preflight import Priced, request_from_config, with_expandable_segments, with_trace
from planner.pricing import margin
from planner.pricing.price import price


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Will this training config fit? Exit 0 fits, 1 does not (prints the smallest change that fits), 2 bad config."
    parser.add_argument("config", help="training config, .yaml/.yml/.json: qplan's (model, gpu, quantization, lora, "
                        "training), axolotl's, LLaMA-Factory's or trl sft's")
    parser.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                        help="which tool's config it is (default auto: detected from its keys)")
    parser.add_argument("--gpu", "-g", help="check on this card instead of the config's gpu (name, size like 24GB, or auto)")
    parser.add_argument("--ecc", choices=ECC_MODES, help="the card's ECC mode, instead of the config's ecc (default on)")
    parser.add_argument("--gpus", type=int, help="instead of the config's gpus")
    parser.add_argument("--margin", help=margin.HELP)
    parser.add_argument("--expandable-segments", action="store_true",
                        help="the run sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (also read from this "
                             "shell's PYTORCH_CUDA_ALLOC_CONF)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON: fits, plan, suggestion")
    parser.add_argument("--trace", action=argparse.BooleanOptionalAction, default=None,
                        help="price the run by tracing the real step on fake CUDA tensors (default: when torch, "
                             "transformers, peft and bitsandbytes are installed; QPLAN_TRACE=never turns it off)")
    parser.add_argument("--emit", choices=EMIT_FORMATS,
                        help="print the config after the smallest change that fits (as it is, when it fits) as that tool's config")


def run(args: argparse.Namespace) -> int:
    translated = translate(load_data(args.config), args.format)
    config = parse_config(translated.data, source=str(args.config))
    spelling = translated.spelling
    if spelling is not None and args.gpu is None:
        spelling.notes.append(f"a {translated.format} config names no GPU: checked on this machine's GPU (--gpu auto); "
                              "pass --gpu to check for another card")
    if args.gpus is not None:
        if not 1 <= args.gpus <= 1024:
            raise QPlanError(f"--gpus {args.gpus}: must be between 1 and 1024")
        config = config.model_copy(update={"gpus": args.gpus})
    try:
        request = request_from_config(config, gpu=args.gpu, ecc=args.ecc, margin=margin.parse_margin(args.margin),
                                      spelling=spelling)
    except QPlanError as err:
        if spelling is not None and args.gpu is None and "--gpu auto" in str(err):
            raise QPlanError(f"a {translated.format} config names no GPU, so qplan looked for this machine's: {err}") from None
        raise
    if args.expandable_segments or expandable_in(os.environ.get(ALLOC_CONF)):
        where = "--expandable-segments" if args.expandable_segments else f"{ALLOC_CONF} of this shell"
        request = with_expandable_segments(request, f"planned for {ALLOC_CONF}={EXPANDABLE} ({where})")
    result = price(with_trace(request, args.trace))
    if args.emit:
        return emit_check(result, args.emit)
    if args.json:
        out = {"config": args.config, "format": translated.format, "fits": result.fits, "plan": result.plan.model_dump(mode="json"),
               "suggestion": result.suggestion.model_dump(mode="json") if result.suggestion else None}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        render_check(result, args.config, translated.format)
    return 0 if result.fits else 1


def emit_check(result: Priced, fmt: str) -> int:
    """The settings that fit (after the smallest change, if any) as ``fmt``; exit 0 when the config fits as
    written, 1 when it needs the change or nothing fits (then nothing is printed but the reason)."""
    s = result.suggestion
    if s is None and not result.fits:
        sys.stderr.write("qplan: no change of this config fits this card, so there is nothing to emit (qplan check "
                         "without --emit says what would work instead)\n")
        return 1
    why = "the smallest change (" + "; ".join(map(str, s.changes)) + ")" if s else "the config as written"
    sys.stdout.write(emit_plan(result.plan, fmt, s.settings if s else None, s.peak_bytes if s else None, why))
    return 0 if result.fits else 1


def render_check(result: Priced, source: str, fmt: str = "qplan") -> None:
    from rich.console import Console

    from planner.output.render import render
    from planner.inputs.units import fmt_gib

    console = Console()
    if fmt != "qplan":
        console.print(f"Read {source} as a{'n' if fmt[0] in 'aeiou' else ''} {fmt} config.", markup=False, highlight=False)
    render(result.plan, console)
    suggestion = result.suggestion
    if suggestion:
        console.print(f"[bold]Smallest change to {source} that fits[/] ({suggestion.rule}):")
        for change in suggestion.changes:
            console.print(f"  {change}", markup=False, highlight=False)
        before = result.plan.settings
        tokens = before.tokens * before.grad_accum
        console.print(
            f"  -> peak {fmt_gib(suggestion.peak_bytes)}, headroom {fmt_gib(suggestion.headroom_bytes)}; "
            f"tokens per optimizer step {tokens} -> {suggestion.tokens_per_step}"
        )
    elif not result.fits:
        console.print("[bold]No change of this config fits this card[/] (see what would work instead, above).")
