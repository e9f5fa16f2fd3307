"""``qplan check`` on axolotl, LLaMA-Factory and ``trl sft`` configs: the real example files of each project
(tests/fixtures/formats/, each with its source URL and commit on line 1), detection, the settings each is read
into, patches in the tool's own keys, refusals of what qplan does not price, and the notes it gives."""

import json
from pathlib import Path

import pytest
import yaml

from planner import preflight
from planner.cli import main
from planner.errors import QPlanError
from planner.inputs.catalog import resolve_model
from planner.inputs.formats import detect, translate

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The examples name hub ids whose config.json is not in the catalogue (and tests have no network); each is
# priced as the catalogue entry of the same shape: the NousResearch re-uploads are Meta's weights, Llama-3-8B
# has Llama-3.1-8B's layers (only rope scaling and max positions differ), Qwen3-4B-Instruct-2507 is Qwen3-4B's.
STAND_INS = {
    "NousResearch/Llama-3.2-1B": "llama-3.2-1b", "NousResearch/Meta-Llama-3-8B": "llama-3.1-8b",
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama-3.1-8b", "Qwen/Qwen3-4B-Instruct-2507": "qwen3-4b",
}


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch):
    monkeypatch.setattr(preflight, "resolve_model", lambda name: resolve_model(STAND_INS.get(name, name)))


def check(capsys, *args):
    code = main(["check", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_json(capsys, path, *args):
    code, out, err = check(capsys, path, "--gpu", "24GB", "--json", *args)
    assert out, err
    return code, json.loads(out)


def load(name):
    return yaml.safe_load((FIXTURES / name).read_text())


def write(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_fixture_names_its_source():
    for path in FIXTURES.iterdir():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# https://github.com/") or first.startswith("# The QLoRA command of trl"), path.name


@pytest.mark.parametrize("name, fmt", [
    ("axolotl_qlora-1b.yml", "axolotl"), ("axolotl_qlora.yml", "axolotl"),
    ("llamafactory_llama3_lora_sft_otfq.yaml", "llamafactory"), ("llamafactory_qwen3_lora_sft_otfq.yaml", "llamafactory"),
    ("trl_example_config.yaml", "trl"), ("trl_qlora_peft_integration.yaml", "trl"),
])
def test_detect_the_fixtures(name, fmt):
    assert detect(load(name)) == fmt


def test_detect_qplan_and_refuse_what_it_cannot_tell():
    assert detect(yaml.safe_load((EXAMPLES / "seed_65b_48gb.yaml").read_text())) == "qplan"
    with pytest.raises(QPlanError, match="keys of both axolotl and llamafactory"):
        detect({"base_model": "x", "cutoff_len": 1024})
    with pytest.raises(QPlanError, match="cannot tell which tool"):
        detect({"learning_rate": 1e-4})
    with pytest.raises(QPlanError, match="expected a mapping"):
        detect(["a"])


def test_axolotl_qlora_1b(capsys):
    code, result = check_json(capsys, FIXTURES / "axolotl_qlora-1b.yml")
    s = result["plan"]["settings"]
    assert result["format"] == "axolotl" and code == 0
    assert (s["quant"], s["double_quant"], s["compute_dtype"], s["rank"], s["lora_dropout"]) == ("nf4", True, "bf16", 32, 0.05)
    assert s["targets"] == ["gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj"]
    assert (s["seq_len"], s["batch"], s["grad_accum"], s["optim"]) == (2048, 2, 4, "adamw_8bit")
    assert (s["gradient_checkpointing"], s["attn"], s["prepare_kbit"], s["autocast"]) == (True, "flash_attention_2", True, True)
    notes = "\n".join(result["plan"]["notes"])
    assert "sample_packing is on" in notes and "bf16: auto" in notes and "prepare_model_for_kbit_training" in notes


def test_axolotl_qlora_8b_targets_every_linear(capsys):
    _, result = check_json(capsys, FIXTURES / "axolotl_qlora.yml")
    s = result["plan"]["settings"]
    assert s["targets"] == ["all-linear"] and s["attn"] == "flash_attention_2"
    assert (s["seq_len"], s["batch"], s["grad_accum"], s["optim"]) == (4096, 2, 4, "paged_adamw_32bit")


@pytest.mark.parametrize("name", ["llamafactory_llama3_lora_sft_otfq.yaml", "llamafactory_qwen3_lora_sft_otfq.yaml"])
def test_llamafactory_examples(capsys, name):
    code, result = check_json(capsys, FIXTURES / name)
    s = result["plan"]["settings"]
    assert result["format"] == "llamafactory" and code == 0
    assert (s["quant"], s["double_quant"], s["compute_dtype"], s["rank"], s["alpha"], s["lora_dropout"]) == ("nf4", True, "bf16", 8, 16, 0)
    assert s["targets"] == ["all-linear"] and (s["seq_len"], s["batch"], s["grad_accum"]) == (2048, 1, 8)
    assert (s["optim"], s["gradient_checkpointing"], s["prepare_kbit"], s["attn"]) == ("adamw_torch", True, False, "sdpa")
    assert any("packing is off" in note and "cutoff_len=2048" in note for note in result["plan"]["notes"])


def test_trl_example_without_peft_is_refused(capsys):
    code, out, err = check(capsys, FIXTURES / "trl_example_config.yaml", "--gpu", "24GB")
    assert code == 2 and out == "" and "use_peft is not set" in err and err.count("\n") == 1


def test_trl_documented_qlora_computes_in_float32_and_is_refused(capsys):
    code, _, err = check(capsys, FIXTURES / "trl_qlora_peft_integration.yaml", "--gpu", "24GB")
    assert code == 2 and "dtype is float32 (the ModelConfig default)" in err


def test_trl_documented_qlora_with_bf16(tmp_path, capsys):
    data = {**load("trl_qlora_peft_integration.yaml"), "dtype": "bfloat16"}  # trl sft --config ... --dtype bfloat16
    code, result = check_json(capsys, write(tmp_path, data))
    s = result["plan"]["settings"]
    assert result["format"] == "trl" and code == 0
    assert (s["quant"], s["double_quant"], s["compute_dtype"], s["rank"], s["lora_dropout"]) == ("nf4", False, "bf16", 32, 0.05)
    assert s["targets"] == ["q_proj", "v_proj"]  # peft's default for llama: ModelConfig.lora_target_modules is None
    assert (s["seq_len"], s["batch"], s["grad_accum"], s["optim"]) == (1024, 1, 16, "adamw_torch")
    assert (s["gradient_checkpointing"], s["prepare_kbit"], s["autocast"]) == (True, False, True)
    notes = "\n".join(result["plan"]["notes"])
    assert "chunked_nll" in notes and "packing is off" in notes and "max_length=1024" in notes
    assert "lora_target_modules not set: peft's default for llama is q_proj, v_proj" in notes


def test_axolotl_patch_names_axolotl_keys(tmp_path, capsys):
    data = {**load("axolotl_qlora.yml"), "micro_batch_size": 4, "gradient_accumulation_steps": 4, "sequence_len": 2048,
            "gradient_checkpointing": True}
    code, out, _ = check(capsys, write(tmp_path, data), "--gpu", "rtx4090")
    assert code == 1
    assert "micro_batch_size: 4 -> 1" in out and "gradient_accumulation_steps: 4 -> 16" in out
    assert "training." not in out


def test_llamafactory_patch_negates_disable_gradient_checkpointing(tmp_path, capsys):
    data = {**load("llamafactory_llama3_lora_sft_otfq.yaml"), "disable_gradient_checkpointing": True, "cutoff_len": 4096}
    code, result = check_json(capsys, write(tmp_path, data))
    changes = [(c["field"], c["old"], c["new"]) for c in result["suggestion"]["changes"]]
    assert code == 1 and changes == [("disable_gradient_checkpointing", True, False)]


def test_trl_patch_names_trl_keys(tmp_path, capsys):
    data = {**load("trl_qlora_peft_integration.yaml"), "dtype": "bfloat16", "max_length": 65536,
            "model_name_or_path": "llama-3.1-8b"}
    code, result = check_json(capsys, write(tmp_path, data))
    fields = [c["field"] for c in result["suggestion"]["changes"]]
    assert code == 1 and "max_length" in fields and all("." not in f for f in fields)


def test_axolotl_without_checkpointing_keeps_it_off(tmp_path, capsys):
    # prepare_model_for_kbit_training(use_gradient_checkpointing=cfg.gradient_checkpointing): off stays off
    data = {**load("axolotl_qlora-1b.yml"), "gradient_checkpointing": False, "sequence_len": 256, "micro_batch_size": 1}
    _, result = check_json(capsys, write(tmp_path, data))
    assert result["plan"]["settings"]["gradient_checkpointing"] is False
    assert result["plan"]["settings"]["prepare_kbit"] is True


@pytest.mark.parametrize("name, key, value, expected", [
    ("axolotl_qlora-1b.yml", "peft_use_dora", True, "axolotl peft_use_dora: DoRA"),
    ("axolotl_qlora-1b.yml", "deepspeed", "zero3.json", "axolotl deepspeed: DeepSpeed"),
    ("axolotl_qlora-1b.yml", "gradient_checkpointing", "offload", "gradient_checkpointing: offload offloads"),
    ("axolotl_qlora-1b.yml", "plugins", ["axolotl.integrations.liger.LigerPlugin"], "axolotl plugins:"),
    ("axolotl_qlora-1b.yml", "micro_batch_sise", 2, "(did you mean micro_batch_size?)"),
    ("axolotl_qlora-1b.yml", "bf16", False, "the 4-bit compute dtype is float32"),
    ("axolotl_qlora-1b.yml", "adapter", None, "adapter is not set"),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "use_dora", True, "LLaMA-Factory use_dora: DoRA"),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "upcast_layernorm", True, "LLaMA-Factory upcast_layernorm"),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "stage", "dpo", "stage: dpo"),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "quantization_method", "hqq", "quantization_method: hqq"),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "finetuning_type", "full", "finetuning_type: full"),
    ("llamafactory_qwen3_lora_sft_otfq.yaml", "lora_rank", "8", "lora_rank: expected int"),
    ("trl_qlora_peft_integration.yaml", "use_dora", True, "trl use_dora: DoRA"),
    ("trl_qlora_peft_integration.yaml", "use_liger_kernel", True, "trl use_liger_kernel"),
    ("trl_qlora_peft_integration.yaml", "activation_offloading", True, "trl activation_offloading"),
    ("trl_qlora_peft_integration.yaml", "attn_implementation", "kernels-community/flash-attn3", "attn_implementation:"),
])
def test_refusals_are_one_line_naming_the_key(tmp_path, capsys, name, key, value, expected):
    data = {**load(name), key: value}
    if name.startswith("trl"):
        data.setdefault("dtype", "bfloat16")
    code, out, err = check(capsys, write(tmp_path, data), "--gpu", "24GB")
    assert code == 2 and out == ""
    assert expected in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["axolotl_qlora-1b.yml", "llamafactory_qwen3_lora_sft_otfq.yaml"])
def test_keys_without_memory_effect_are_accepted(tmp_path, capsys, name):
    base = load(name)
    lean = {k: v for k, v in base.items() if k not in ("learning_rate", "output_dir", "logging_steps", "warmup_ratio")}
    assert len(lean) < len(base)
    _, full = check_json(capsys, write(tmp_path, base))
    _, without = check_json(capsys, write(tmp_path, lean, "lean.yaml"))
    assert full["plan"]["peak_bytes"] == without["plan"]["peak_bytes"]


def test_format_flag_overrides_detection(tmp_path, capsys):
    code, _, err = check(capsys, FIXTURES / "axolotl_qlora-1b.yml", "--gpu", "24GB", "--format", "trl")
    assert code == 2 and "trl key" in err


def test_no_gpu_in_the_file_checks_this_machine_with_a_note(capsys, monkeypatch):
    from planner.inputs.gpus import resolve_gpu

    asked = []
    monkeypatch.setattr(preflight, "resolve_gpu", lambda spec, **kw: asked.append(spec) or resolve_gpu("h100"))
    code = main(["check", str(FIXTURES / "axolotl_qlora-1b.yml"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and asked == ["auto"]
    assert any("names no GPU" in note for note in result["plan"]["notes"])


def test_translate_keeps_qplan_configs_as_they_are():
    data = yaml.safe_load((EXAMPLES / "seed_65b_48gb.yaml").read_text())
    translated = translate(data)
    assert translated.format == "qplan" and translated.data is data and translated.spelling is None


def test_no_gpu_anywhere_is_one_line_asking_for_one(capsys, monkeypatch):
    def no_nvml(spec, **kw):
        raise QPlanError("--gpu auto found no NVIDIA GPU here; give the card or its memory, like 24GB")

    monkeypatch.setattr(preflight, "resolve_gpu", no_nvml)
    code, out, err = check(capsys, FIXTURES / "llamafactory_qwen3_lora_sft_otfq.yaml")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "a llamafactory config names no GPU" in err and "give the card" in err


def test_reader_types_values_under_the_tools_key():
    from planner.inputs.formats.common import Reader

    r = Reader({"lora_r": 8, "flag": "yes", "n": 0}, "tool", {"lora_r", "flag", "n", "missing"}, frozenset(), {})
    assert r.positive("lora_r") == 8 and r.get("missing", 3) == 3 and r.defaulted == ["missing=3"]
    with pytest.raises(QPlanError, match="tool flag: expected true/false, got yes"):
        r.typed("flag", bool)
    with pytest.raises(QPlanError, match="tool n: must be at least 1"):
        r.positive("n")
    with pytest.raises(QPlanError, match="tool lora_r: expected string"):
        r.typed("lora_r", str)
    with pytest.raises(QPlanError, match="tool deepspeed: partitions; qplan does not price it"):
        Reader({"deepspeed": "z3.json"}, "tool", set(), frozenset(), {"deepspeed": "partitions"})
    Reader({"deepspeed": None, "lr": 1e-4}, "tool", set(), frozenset({"lr"}), {"deepspeed": "partitions"})  # empty: accepted


def test_mapped_writes_values_as_the_tool_spells_them():
    from planner.inputs.config_file import Mapped
    from planner.inputs.settings import TrainSettings

    mapped = Mapped(settings=TrainSettings(), values={"gradient_checkpointing": lambda on: not on})
    assert mapped.written_as("gradient_checkpointing", True) is False and mapped.written_as("rank", 8) == 8


@pytest.mark.parametrize("fmt,text,key", [
    ("axolotl", "adapter: qlora\nload_in_4bit: true\nlora_r: 8\n", "base_model"),
    ("llamafactory", "stage: sft\nfinetuning_type: lora\nlora_rank: 8\n", "model_name_or_path"),
    ("trl", "use_peft: true\nlora_r: 8\ndtype: bfloat16\n", "model_name_or_path"),
])
def test_a_config_without_its_model_is_one_line(tmp_path, capsys, fmt, text, key):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    code, out, err = check(capsys, path, "--gpu", "24GB", "--format", fmt)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{key} is not set: qplan needs the model" in err
