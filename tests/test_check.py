"""``qplan check CONFIG``: exit codes, the patch it prints, the seeds' configs, typos and broken files, JSON,
and that it neither writes the config nor imports torch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = """\
model: llama-3.1-8b
gpu: rtx4090
quantization:
  load_in_4bit: true
  bnb_4bit_quant_type: nf4
  bnb_4bit_use_double_quant: true
  bnb_4bit_compute_dtype: bfloat16
lora:
  r: 16
  lora_alpha: 32
  target_modules: all-linear
  lora_dropout: 0.05
training:
  learning_rate: 2.0e-4
  output_dir: out
  per_device_train_batch_size: {batch}
  gradient_accumulation_steps: {accum}
  optim: paged_adamw_32bit
  bf16: true
  gradient_checkpointing: true
  max_seq_length: {seq}
  packing: true
"""


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def check(capsys, *args):
    code = main(["check", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fits_exit_0_with_headroom(tmp_path, capsys):
    code, out, _ = check(capsys, write(tmp_path, BASE.format(batch=1, accum=16, seq=2048)))
    assert code == 0
    assert "FITS with" in out and "headroom" in out


def test_too_long_sequences_exit_1_with_a_seq_patch(tmp_path, capsys):
    code, out, _ = check(capsys, write(tmp_path, BASE.format(batch=1, accum=16, seq=32768)), "--json")
    result = json.loads(out)
    assert code == 1 and result["fits"] is False
    changes = result["suggestion"]["changes"]
    assert [c["field"] for c in changes] == ["training.max_seq_length"]
    assert changes[0]["old"] == 32768 and changes[0]["new"] < 32768 and changes[0]["new"] % 128 == 0
    assert result["suggestion"]["headroom_bytes"] >= 0
    assert result["suggestion"]["peak_bytes"] < result["plan"]["gpu"]["budget_bytes"]


def test_large_micro_batch_patch_keeps_the_effective_batch(tmp_path, capsys):
    code, out, _ = check(capsys, write(tmp_path, BASE.format(batch=4, accum=4, seq=2048)))
    assert code == 1
    assert "training.per_device_train_batch_size: 4 -> 2" in out
    assert "training.gradient_accumulation_steps: 4 -> 8" in out
    assert "tokens per optimizer step 32768 -> 32768" in out


def test_seed_70b_on_24gb_is_refused_with_reason_and_alternatives(capsys):
    code, out, _ = check(capsys, EXAMPLES / "seed_70b_24gb.yaml", "--json")
    result = json.loads(out)
    assert code == 1 and result["suggestion"] is None
    plan = result["plan"]
    assert plan["settings"]["rank"] == 64 and plan["settings"]["seq_len"] == 512 and plan["settings"]["optim"] == "paged_adamw_32bit"
    assert plan["trainable_params"] == 828_375_040  # r=64 on all 7 projections of 80 layers (the seed says 272,629,760)
    assert plan["notes"][0].startswith("the frozen base model (4-bit weights plus the modules left in 16/32-bit) alone needs")
    assert {a["kind"] for a in plan["alternatives"]} == {"larger-gpu", "more-gpus", "smaller-model"}


def test_seed_65b_on_48gb_gives_the_numbers(capsys):
    code, out, _ = check(capsys, EXAMPLES / "seed_65b_48gb.yaml", "--json")
    result = json.loads(out)
    plan = result["plan"]
    s = plan["settings"]
    assert (s["rank"], s["seq_len"], s["batch"], s["grad_accum"], s["optim"], s["prepare_kbit"]) == (64, 2048, 1, 8, "adamw_torch", False)
    assert s["targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"] and s["gradient_checkpointing"]
    assert plan["trainable_params"] == 262_144_000
    assert plan["gpu"]["label"] == "NVIDIA RTX A6000"
    assert code == (0 if result["fits"] else 1)
    assert plan["peak_bytes"] > 0 and (result["suggestion"] is not None or result["fits"])


def test_json_and_yaml_read_the_same(tmp_path, capsys):
    import yaml

    text = BASE.format(batch=1, accum=16, seq=1024)
    code_y, out_y, _ = check(capsys, write(tmp_path, text), "--json")
    code_j, out_j, _ = check(capsys, write(tmp_path, json.dumps(yaml.safe_load(text)), "run.json"), "--json")
    assert code_y == code_j == 0
    assert json.loads(out_y)["plan"] == json.loads(out_j)["plan"]


def test_ignored_fields_do_not_change_the_plan(tmp_path, capsys):
    text = BASE.format(batch=1, accum=16, seq=1024)
    lean = "\n".join(line for line in text.splitlines() if "learning_rate" not in line and "output_dir" not in line)
    _, with_extra, _ = check(capsys, write(tmp_path, text), "--json")
    _, without, _ = check(capsys, write(tmp_path, lean, "lean.yaml"), "--json")
    assert json.loads(with_extra)["plan"]["peak_bytes"] == json.loads(without)["plan"]["peak_bytes"]


@pytest.mark.parametrize("edit, expected", [
    (("gradient_accumulation_steps", "gradient_acumulation_steps"),
     "unknown field training.gradient_acumulation_steps (did you mean gradient_accumulation_steps?)"),
    (("quantization:", "quantisation:"), "unknown field quantisation (did you mean quantization?)"),
    (("lora_dropout", "lora_droput"), "unknown field lora.lora_droput (did you mean lora_dropout?)"),
    (("optim: paged_adamw_32bit", "optim: lion_32bit"), "training.optim 'lion_32bit' is not modelled"),
    (("  packing: true", "  packing: true\n  torch_compile: true"), "training.torch_compile changes memory"),
    (("  max_seq_length: 1024\n", ""), "max_seq_length (or max_length) is not set"),
    (("  bnb_4bit_compute_dtype: bfloat16\n", ""), "bnb_4bit_compute_dtype is float32"),
    (("r: 16", "r: sixteen"), "lora.r: Input should be a valid integer"),
    (("gpu: rtx4090", "gpu: rtx9090"), "unknown GPU 'rtx9090'"),
    (("target_modules: all-linear", "target_modules: [q_proj, w_proj]"), "target module 'w_proj'"),
])
def test_bad_config_exit_2_one_line(tmp_path, capsys, edit, expected):
    text = BASE.format(batch=1, accum=16, seq=1024).replace(*edit)
    code, out, err = check(capsys, write(tmp_path, text))
    assert code == 2 and out == ""
    assert expected in err and err.count("\n") == 1


@pytest.mark.parametrize("name, text, expected", [
    ("broken.yaml", "model: [unclosed", "is not valid YAML"),
    ("broken.json", "{", "is not valid JSON"),
    ("list.yaml", "- a\n- b\n", "expected a mapping"),
    ("section.yaml", "model: llama-3.1-8b\nlora: 16\n", "lora must be a mapping"),
    ("run.toml", "model = 1", "must be .yaml, .yml or .json"),
])
def test_unreadable_files_exit_2(tmp_path, capsys, name, text, expected):
    code, _, err = check(capsys, write(tmp_path, text, name))
    assert code == 2 and expected in err


def test_missing_file_exit_2(tmp_path, capsys):
    code, _, err = check(capsys, tmp_path / "nope.yaml")
    assert code == 2 and "does not exist" in err


def test_check_never_writes_the_config(tmp_path, capsys):
    path = write(tmp_path, BASE.format(batch=4, accum=4, seq=8192))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert check(capsys, path)[0] == 1
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_gpu_override(tmp_path, capsys):
    path = write(tmp_path, BASE.format(batch=1, accum=16, seq=32768))
    assert check(capsys, path, "--gpu", "h200")[0] == 0


def test_check_does_not_import_torch():
    code = ("import sys; from planner.cli import main; rc = main(['check', %r, '--json']); "
            "assert rc == 1; assert not {'torch', 'transformers', 'peft'} & set(sys.modules)") % str(EXAMPLES / "seed_70b_24gb.yaml")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_check_plans_for_expandable_segments(tmp_path, capsys, monkeypatch, how):
    path = write(tmp_path, BASE.format(batch=1, accum=16, seq=2048))
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    default = json.loads(check(capsys, path, "--json")[1])
    if how == "flag":
        args = ("--expandable-segments",)
    else:
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        args = ()
    expandable = json.loads(check(capsys, path, "--json", *args)[1])
    assert not default["plan"]["settings"]["expandable_segments"]
    assert expandable["plan"]["settings"]["expandable_segments"]
    assert expandable["plan"]["peak_bytes"] < default["plan"]["peak_bytes"]
    assert any("planned for PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in n for n in expandable["plan"]["notes"])
