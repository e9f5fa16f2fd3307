"""``--emit python|yaml|axolotl|llamafactory``: what qplan prints, ``qplan check`` reads back to the same
settings and the same peak (round trip, for ``qplan`` plans and for ``qplan check``'s smallest change), and
what a format cannot say is refused in one line.

The python round trip never runs the emitted code: it parses it with ``ast`` and reads the keyword arguments
of ``BitsAndBytesConfig``, ``from_pretrained``, ``prepare_model_for_kbit_training``, ``LoraConfig`` and
``SFTConfig`` into qplan's own sections. Where transformers and peft are installed, the same keyword arguments
also build real ``BitsAndBytesConfig`` and ``LoraConfig`` objects (so every name is one those classes take).
"""

import ast
import json

import pytest
import yaml

from planner.cli import main
from planner.errors import QPlanError
from planner.inputs.config_file import Spelling, parse_config
from planner.inputs.settings import TrainSettings
from planner.output.emit import EMITTERS, emit
from planner.preflight import request_from_config
from planner.pricing.price import price

FORMATS = list(EMITTERS)


def run(capsys, *args):
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def plan_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


# ---- the python emitter, read back with ast ----------------------------------------------------------------


def _literal(node):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
        return node.attr  # torch.bfloat16 -> "bfloat16"
    return ast.literal_eval(node)


def python_calls(code: str) -> dict[str, tuple[list, dict]]:
    """Call name -> (positional literals, keyword literals) for each call whose arguments are literals."""
    calls = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = [_literal(a) for a in node.args if not isinstance(a, ast.Name)]  # `model` is a variable
            kwargs = {k.arg: _literal(k.value) for k in node.keywords
                      if not (isinstance(k.value, ast.Name) or isinstance(k.value, ast.Constant) and k.value.value is Ellipsis)}
            calls[name] = (args, kwargs)
    return calls


def python_request(code: str, gpu: str, expandable: bool):
    """The qplan request of the emitted code's objects (module doc)."""
    calls = python_calls(code)
    (model,), load = calls["from_pretrained"]
    data = {"model": model, "attn_implementation": load["attn_implementation"],
            "lora": calls["LoraConfig"][1], "prepare_model_for_kbit_training": "prepare_model_for_kbit_training" in calls,
            "training": {k: v for k, v in calls["SFTConfig"][1].items() if k != "output_dir"}}
    if "BitsAndBytesConfig" in calls:
        data["quantization"] = calls["BitsAndBytesConfig"][1]
    update = {"expandable_segments": expandable}
    if "prepare_model_for_kbit_training" in calls:  # use_gradient_checkpointing=False keeps it off
        update["gradient_checkpointing"] = calls["prepare_model_for_kbit_training"][1]["use_gradient_checkpointing"]
    return request_from_config(parse_config(data), gpu=gpu, spelling=Spelling(update=update))


# ---- round trips ----------------------------------------------------------------------------------------------

PLANS = {  # qplan arguments -> the plan to emit (alpha given: it has no memory effect and no default to match)
    "default": ["--model", "llama-3.1-8b", "--gpu", "rtx4090", "--alpha", "32"],
    "no-prepare": ["--model", "llama-3.1-8b", "--gpu", "rtx4090", "--alpha", "16", "--no-prepare-kbit"],
    "fp16 card": ["--model", "llama-2-7b", "--gpu", "t4", "--alpha", "16", "--no-prepare-kbit", "--targets", "q_proj,v_proj"],
    "fp4 single quant eager": ["--model", "qwen2.5-7b", "--gpu", "a100-80gb", "--alpha", "16", "--quant", "fp4",
                               "--no-double-quant", "--attn", "eager", "--no-prepare-kbit", "--optim", "adamw_torch"],
    "expandable": ["--model", "mistral-7b-v0.3", "--gpu", "24GB", "--alpha", "8", "--expandable-segments"],
    "8-bit": ["--model", "llama-3.2-3b", "--gpu", "l4", "--alpha", "16", "--quant", "int8", "--rank", "16"],
    "16-bit lora": ["--model", "qwen3-4b", "--gpu", "a100-80gb", "--alpha", "16", "--quant", "none", "--no-prepare-kbit"],
}
EXPRESSIBLE = {  # which plans each format can say (the others are refused: test_what_a_format_cannot_say)
    "python": set(PLANS), "yaml": set(PLANS),
    "axolotl": {"default", "expandable", "8-bit", "16-bit lora"},
    "llamafactory": {"no-prepare", "fp16 card", "fp4 single quant eager", "16-bit lora"},
}
CASES = [(fmt, name) for fmt in FORMATS for name in PLANS if name in EXPRESSIBLE[fmt]]


@pytest.mark.parametrize("fmt, name", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_emit_round_trips_through_check(tmp_path, capsys, fmt, name):
    args = PLANS[name]
    plan = plan_json(capsys, *args)
    code, emitted, err = run(capsys, *args, "--emit", fmt)
    assert code == 0 and emitted.startswith("# qplan: the plan for"), err
    gpu = args[args.index("--gpu") + 1]
    expandable = "--expandable-segments" in args
    if fmt == "python":
        back = price(python_request(emitted, gpu, expandable)).plan.model_dump(mode="json")
    else:
        path = tmp_path / f"emitted-{fmt}.yaml"
        path.write_text(emitted)
        extra = ["--expandable-segments"] if expandable else []
        result = plan_json(capsys, "check", path, "--gpu", gpu, *extra)
        assert result["format"] == ("qplan" if fmt == "yaml" else fmt)
        back = result["plan"]
    assert back["settings"] == plan["settings"]
    assert back["peak_bytes"] == plan["peak_bytes"]


def test_every_format_has_round_trips():
    assert {fmt for fmt, _ in CASES} == set(FORMATS) and all(len(EXPRESSIBLE[f]) >= 3 for f in FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_emits_its_smallest_change(tmp_path, capsys, fmt):
    config = {"model": "llama-3.1-8b", "gpu": "rtx4090",
              "quantization": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                               "bnb_4bit_compute_dtype": "bfloat16"},
              "lora": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lora_dropout": 0.05},
              "training": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "optim": "paged_adamw_32bit",
                           "bf16": True, "gradient_checkpointing": True, "max_seq_length": 4096},
              "prepare_model_for_kbit_training": fmt != "llamafactory"}
    source = tmp_path / "run.yaml"
    source.write_text(yaml.safe_dump(config))
    code, out, _ = run(capsys, "check", source, "--json")
    before = json.loads(out)
    assert code == 1 and before["suggestion"] is not None
    code, emitted, _ = run(capsys, "check", source, "--emit", fmt)
    assert code == 1 and emitted.startswith("# qplan: the smallest change (")
    if fmt == "python":
        back = price(python_request(emitted, "rtx4090", False)).plan.model_dump(mode="json")
    else:
        path = tmp_path / "emitted.yaml"
        path.write_text(emitted)
        code, out, _ = run(capsys, "check", path, "--gpu", "rtx4090", "--json")
        assert code == 0
        back = json.loads(out)["plan"]
    assert back["settings"] == before["suggestion"]["settings"]
    assert back["peak_bytes"] == before["suggestion"]["peak_bytes"]


def test_check_emits_a_fitting_config_as_it_is(tmp_path, capsys):
    from tests.test_check import BASE

    source = tmp_path / "run.yaml"
    source.write_text(BASE.format(batch=1, accum=16, seq=1024))
    code, emitted, _ = run(capsys, "check", source, "--emit", "axolotl")
    assert code == 0 and emitted.startswith("# qplan: the config as written")
    assert yaml.safe_load(emitted)["sequence_len"] == 1024


def test_check_with_nothing_that_fits_emits_nothing(capsys):
    from pathlib import Path

    code, out, err = run(capsys, "check", Path(__file__).parents[1] / "examples" / "seed_70b_24gb.yaml", "--emit", "yaml")
    assert code == 1 and out == "" and "nothing to emit" in err


@pytest.mark.parametrize("fmt, settings, expected", [
    ("llamafactory", {}, "LLaMA-Factory never calls prepare_model_for_kbit_training"),
    ("axolotl", {"prepare_kbit": False}, "axolotl calls prepare_model_for_kbit_training exactly for a quantized adapter"),
    ("axolotl", {"autocast": False}, "turn the Trainer's autocast on"),
    ("yaml", {"gradient_checkpointing": False}, "gradient checkpointing off is not a key"),
    ("python", {"full_finetune": True}, "full fine-tune"),
    ("yaml", {"adapter_fp32": False}, "16-bit"),
])
def test_what_a_format_cannot_say(fmt, settings, expected):
    with pytest.raises(QPlanError, match=expected):
        emit(fmt, TrainSettings(**settings), "llama-3.1-8b", "rtx4090", [])


def test_multi_gpu_plans_are_refused(capsys):
    code, out, err = run(capsys, "--model", "llama-2-70b", "--gpu", "24GB", "--gpus", "2", "--emit", "axolotl")
    assert code == 2 and out == "" and "for 2 GPUs" in err and err.count("\n") == 1


def test_python_emits_prepare_with_checkpointing_off():
    code = emit("python", TrainSettings(gradient_checkpointing=False), "llama-3.1-8b", "rtx4090", [])
    calls = python_calls(code)
    assert calls["prepare_model_for_kbit_training"][1] == {"use_gradient_checkpointing": False}
    assert calls["SFTConfig"][1]["gradient_checkpointing"] is False
    assert calls["from_pretrained"][0] == ["meta-llama/Llama-3.1-8B"]  # the catalogue's hub id


def test_python_keywords_build_real_objects():
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    import torch

    calls = python_calls(emit("python", TrainSettings(alpha=32), "llama-3.1-8b", "rtx4090", []))
    bnb = {k: getattr(torch, v) if k == "bnb_4bit_compute_dtype" else v for k, v in calls["BitsAndBytesConfig"][1].items()}
    quant = transformers.BitsAndBytesConfig(**bnb)
    lora = peft.LoraConfig(**calls["LoraConfig"][1])
    assert quant.load_in_4bit and quant.bnb_4bit_use_double_quant and quant.bnb_4bit_compute_dtype == torch.bfloat16
    assert lora.r == 64 and lora.target_modules == "all-linear" and lora.lora_dropout == 0.05
    assert set(calls["SFTConfig"][1]) <= set(transformers.TrainingArguments.__dataclass_fields__) | {"max_length"}
