"""Proof that :func:`planner.measure.build.build_model` leaves the GPU as ``from_pretrained`` does.

    python -m planner.measure.equality --model llama-3.2-1b --out equality.json

1. A random model of the config is saved with ``save_pretrained`` (bf16 safetensors) in ``--checkpoint``.
2. A fresh process loads it with ``AutoModelForCausalLM.from_pretrained(dir, quantization_config=
   BitsAndBytesConfig(nf4, double quant, bf16 compute), device_map={"": 0})``; another fresh process
   builds it with ``build_model(dir, ...)``.
3. Each reports the allocator's requested / allocated / reserved bytes after loading, every parameter,
   buffer and quant-state tensor (class, dtype, shape, bytes), the attributes peft and the Trainer read,
   then the same after ``prepare_model_for_kbit_training`` + ``get_peft_model`` (r=16) and at the end and
   peak of one forward/backward at 512 tokens.
The report says which of :data:`EXACT` are equal (``tests/test_measure_gpu.py`` asserts all) and lists
every number of both, with the difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from planner.inputs.settings import TrainSettings
from planner.measure.configs import config_dir
from planner.measure.cuda import run_tool

SETTINGS = TrainSettings(rank=16, seq_len=512, batch=1, grad_accum=1)
# Must be equal. ``allocated`` need not be: the caching allocator does not split a cached block when less
# than 1 MiB would remain (c10/cuda/CUDACachingAllocator.cpp ``shouldSplit``, kSmallSize), so the blocks
# behind the same tensors can be up to 1 MiB larger each, depending on the order of the transient copies.
EXACT = ("load_requested", "adapter_requested", "step_requested", "step_requested_peak", "trainable", "attributes", "fingerprint")


def fingerprint(model) -> dict[str, list]:
    """name -> [class, dtype, shape, bytes] of every parameter and buffer, and of each 4-bit weight's quant state."""
    out: dict[str, list] = {}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        out[name] = [type(tensor).__name__, str(tensor.dtype), list(tensor.shape), tensor.numel() * tensor.element_size()]
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            parts = {"absmax": state.absmax, "code": state.code}
            if state.nested:
                parts.update(offset=state.offset, nested_absmax=state.state2.absmax, nested_code=state.state2.code)
            for key, part in parts.items():
                out[f"{name}.{key}"] = [str(part.dtype), list(part.shape), part.numel() * part.element_size(), str(part.device)]
            out[f"{name}.quant_dtype"] = [str(state.dtype), state.quant_type, state.blocksize]
    return out


def attributes(model) -> dict:
    config = getattr(model.config, "quantization_config", None)
    return {
        "class": type(model).__name__,
        "is_loaded_in_4bit": getattr(model, "is_loaded_in_4bit", None),
        "is_quantized": getattr(model, "is_quantized", None),
        "quantization_method": str(getattr(model, "quantization_method", None)),
        "hf_quantizer": type(getattr(model, "hf_quantizer", None)).__name__,
        "quantization_config": config.to_dict() if config is not None else None,
        "config_dtype": str(model.config.dtype),
        "attn_implementation": model.config._attn_implementation,
        "training": model.training,
    }


def probe(mode: str, directory: str) -> dict:
    """Run in a fresh process: load (``pretrained``) or build (``built``) and report memory."""
    import torch
    from transformers import AutoModelForCausalLM

    from planner.measure.build import bnb_config, build_model
    from planner.measure.recipe import attach_adapter

    torch.cuda.init()
    torch.manual_seed(0)
    if mode == "pretrained":
        model = AutoModelForCausalLM.from_pretrained(
            directory, quantization_config=bnb_config(SETTINGS), device_map={"": 0}, attn_implementation=SETTINGS.attn,
        )
    else:
        model = build_model(directory, SETTINGS)
    torch.cuda.synchronize()
    report = {**_memory(torch, "load"), "attributes": attributes(model), "fingerprint": fingerprint(model)}
    model = attach_adapter(model, SETTINGS)
    torch.cuda.synchronize()
    report.update(**_memory(torch, "adapter"), trainable=model.get_nb_trainable_parameters()[0])
    model.train()
    ids = torch.randint(0, model.get_input_embeddings().weight.shape[0], (SETTINGS.batch, SETTINGS.seq_len), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.cuda.synchronize()
    report.update(**_memory(torch, "step"))
    return report


def _memory(torch, phase: str) -> dict[str, int]:
    """Bytes the tensors asked for (``requested_bytes``), the allocator blocks holding them (``allocated_bytes``)
    and its segments (``reserved_bytes``), now and at the peak since the last reset."""
    stats = torch.cuda.memory_stats()
    return {f"{phase}_{kind}{'_peak' if when == 'peak' else ''}": stats[f"{kind}_bytes.all.{when}"]
            for kind in ("requested", "allocated", "reserved") for when in ("current", "peak")}


def save_random_checkpoint(model: str, directory: Path) -> None:
    """A random bf16 model of the config saved with ``save_pretrained`` (built on the GPU: quick)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(config_dir(model)))
    with torch.device("cuda"):
        random_model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    random_model.save_pretrained(str(directory))


def compare(model: str, checkpoint: Path) -> dict:
    checkpoint.mkdir(parents=True, exist_ok=True)
    _child(["save", model, str(checkpoint)])
    pretrained = _child(["probe", "pretrained", str(checkpoint)])
    built = _child(["probe", "built", str(checkpoint)])
    equal = {key: pretrained[key] == built[key] for key in EXACT}
    differing = sorted(k for k in set(pretrained["fingerprint"]) | set(built["fingerprint"])
                       if pretrained["fingerprint"].get(k) != built["fingerprint"].get(k))
    numbers = sorted(k for k, v in pretrained.items() if isinstance(v, int) and k != "trainable")
    return {
        "model": model, "settings": SETTINGS.model_dump(), "equal": equal, "all_equal": all(equal.values()),
        "numbers": {k: {"from_pretrained": pretrained[k], "built": built[k], "built_minus_from_pretrained": built[k] - pretrained[k]}
                    for k in numbers},
        "attributes": {"from_pretrained": pretrained["attributes"], "built": built["attributes"]},
        "tensors_compared": len(pretrained["fingerprint"]), "differing_tensors": differing[:50],
    }


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "planner.measure.equality", "--child", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"equality child {args[:2]} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, *rest = argv[1:]
        if kind == "save":
            save_random_checkpoint(rest[0], Path(rest[1]))
            print("{}")
        else:
            print(json.dumps(probe(rest[0], rest[1])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m planner.measure.equality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama-3.2-1b")
    parser.add_argument("--checkpoint", default="/tmp/qplan-equality")
    parser.add_argument("--out", help="write the report here as JSON")
    args = parser.parse_args(argv)
    report = compare(args.model, Path(args.checkpoint) / Path(args.model).name)
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps({"model": args.model, "all_equal": report["all_equal"], "equal": report["equal"],
                      "differences": {k: v["built_minus_from_pretrained"] for k, v in report["numbers"].items()}}))
    return 0 if report["all_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "python -m planner.measure.equality"))
