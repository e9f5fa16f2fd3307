"""``python -m planner.measure.saved OUT.json``: the tensors autograd saves per decoder layer on the GPU,
against the analytic ``S_layer`` (``planner.memory.activations.layer_saved``).

A two-layer copy of each model (full width, random NF4 weights, the measuring recipe: prepare, LoRA all-linear,
autocast, no checkpointing) runs one forward under ``torch.autograd.graph.saved_tensors_hooks``; each saved
tensor's storage is counted once, charged to the decoder layer running when it was first saved. The GPU picks
its own SDPA kernel, which a CPU count cannot show.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from planner.inputs.catalog import resolve_model
from planner.memory.activations import layer_saved
from planner.inputs.settings import TrainSettings
from planner.profiles import load_profile_json
from planner.measure.build import build_model
from planner.measure.configs import load_config
from planner.measure.cuda import run_tool
from planner.measure.recipe import attach_adapter, vocab_size

CASES = {name: (case["model"], case["settings"]) for name, case in load_profile_json("probes.json")["saved"].items()}


def shallow_model(model: str, settings: TrainSettings, layers: int, device: str):
    """The model cut to its first ``layers`` decoder layers at full width, built and wrapped with the measuring
    recipe; returns it and its decoder layers in order."""
    config = load_config(model) | {"num_hidden_layers": layers}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        net = attach_adapter(build_model(tmp, settings, device), settings)
    names = tuple(f"layers.{i}" for i in range(layers))
    return net, [m for name, m in net.named_modules() if name.endswith(names)]


def probe(model: str, overrides: dict, device: str = "cuda") -> dict:
    import torch

    settings = TrainSettings(seq_len=2048, batch=1, rank=64, gradient_checkpointing=False, **overrides)
    net, layers = shallow_model(model, settings, 2, device)
    current: list[str] = ["outside"]
    for index, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda *_, i=index: current.__setitem__(0, f"layer{i}"))
        layer.register_forward_hook(lambda *_: current.__setitem__(0, "outside"))
    seen: dict[int, tuple[str, int]] = {}
    shapes: dict[str, list] = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if t.device.type == device and key not in seen:
            seen[key] = (current[0], t.untyped_storage().nbytes())
            shapes.setdefault(current[0], []).append([list(t.shape), str(t.dtype).replace("torch.", ""), t.untyped_storage().nbytes()])
        return t

    ids = torch.randint(0, vocab_size(net), (1, settings.seq_len), device=device)
    net.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(device, dtype=torch.bfloat16):
        net(input_ids=ids, labels=ids)
    measured = {where: sum(size for w, size in seen.values() if w == where) for where in ("layer0", "layer1", "outside")}
    arch = resolve_model(model)
    return {"model": model, "settings": settings.model_dump(), "formula_layer_bytes": layer_saved(arch, settings),
            "measured_bytes": measured, "layer0_tensors": shapes.get("layer0", []),
            "sdp": {"flash": torch.backends.cuda.flash_sdp_enabled(), "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                    "cudnn": torch.backends.cuda.cudnn_sdp_enabled()}}


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    results = {}
    import torch

    for name, (model, overrides) in CASES.items():
        results[name] = row = probe(model, overrides)
        print(name, "formula", row["formula_layer_bytes"], "measured", row["measured_bytes"], flush=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_tool(main, "python -m planner.measure.saved", "OUT.json"))
