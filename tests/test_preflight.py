"""The Python API: preflight() with dicts and with real transformers / peft objects, WillNotFit, and the
lazy exports of ``import planner``."""

import subprocess
import sys

import pytest

import planner
from planner.errors import QPlanError
from planner.preflight import WillNotFit, preflight

QUANT = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16"}
LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lora_dropout": 0.05, "task_type": "CAUSAL_LM"}
TRAIN = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 16, "optim": "paged_adamw_32bit", "bf16": True,
         "max_length": 2048, "packing": True}


def test_dicts_fit_and_the_plan_is_the_run_as_given():
    plan = preflight("llama-3.1-8b", QUANT, LORA, TRAIN, gpu="rtx4090")
    assert plan.fits and 0 < plan.peak_bytes + plan.margin_bytes <= plan.gpu.budget_bytes
    s = plan.settings
    assert (s.quant, s.rank, s.seq_len, s.batch, s.grad_accum, s.optim) == ("nf4", 16, 2048, 1, 16, "paged_adamw_32bit")
    assert s.gradient_checkpointing and s.prepare_kbit and s.autocast  # prepare_model_for_kbit_training assumed
    assert plan.headroom_bytes == plan.gpu.budget_bytes - plan.peak_bytes - plan.margin_bytes


def test_the_training_process_allocator_setting_is_planned(monkeypatch):
    """preflight() runs inside the training process: its PYTORCH_CUDA_ALLOC_CONF decides the allocator terms."""
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    default = preflight("llama-3.1-8b", QUANT, LORA, TRAIN, gpu="rtx4090")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512,expandable_segments:True")
    expandable = preflight("llama-3.1-8b", QUANT, LORA, TRAIN, gpu="rtx4090")
    assert expandable.settings.expandable_segments and not default.settings.expandable_segments
    assert expandable.peak_bytes < default.peak_bytes


def test_will_not_fit_carries_plan_and_suggestion():
    with pytest.raises(WillNotFit) as caught:
        preflight("llama-3.1-8b", QUANT, LORA, {**TRAIN, "max_length": 32768}, gpu="rtx4090")
    err = caught.value
    assert not err.plan.fits and err.plan.settings.seq_len == 32768
    assert [c.field for c in err.suggestion.changes] == ["training_args.max_length"]
    assert err.suggestion.peak_bytes < err.plan.gpu.budget_bytes and err.suggestion.headroom_bytes >= 0
    message = str(err)
    assert "will not fit on NVIDIA GeForce RTX 4090" in message
    assert f"training_args.max_length: 32768 -> {err.suggestion.settings.seq_len}" in message


def test_will_not_fit_without_a_change_names_alternatives():
    with pytest.raises(WillNotFit) as caught:
        preflight("llama-2-70b", QUANT, LORA, {**TRAIN, "max_length": 512}, gpu="24GB")
    err = caught.value
    assert err.suggestion is None
    assert {a.kind for a in err.plan.alternatives} >= {"larger-gpu", "more-gpus", "smaller-model"}
    assert "the frozen base model (4-bit weights plus the modules left in 16/32-bit) alone needs" in str(err) and "Nothing on this card fits" in str(err)


def test_real_hf_objects_give_the_same_plan_as_dicts():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    quant = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                            bnb_4bit_compute_dtype=torch.bfloat16)
    lora = peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.05, task_type="CAUSAL_LM")
    args = transformers.TrainingArguments(output_dir="unused", per_device_train_batch_size=1, gradient_accumulation_steps=16,
                                          optim="paged_adamw_32bit", bf16=True, use_cpu=True, report_to=[])
    from_objects = preflight("llama-3.1-8b", quant, lora, args, gpu="rtx4090", max_seq_length=2048)
    from_dicts = preflight("llama-3.1-8b", QUANT, LORA, TRAIN, gpu="rtx4090")
    assert from_objects.settings == from_dicts.settings
    assert from_objects.peak_bytes == from_dicts.peak_bytes


def test_transformers_config_object_as_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                                      vocab_size=1000)
    plan = preflight(config, QUANT, LORA, TRAIN, gpu="24GB")
    assert plan.model.hidden == 512 and plan.model.layers == 4 and plan.fits


def test_defaults_are_the_libraries_and_are_reported():
    plan = preflight("llama-3.1-8b", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16"}, {"r": 8},
                     {"max_length": 256}, gpu="a100-80gb")
    s = plan.settings
    # BitsAndBytesConfig: fp4, no double quant; LoraConfig: peft's q_proj/v_proj for llama;
    # TrainingArguments: batch 8, no accumulation, adamw_torch_fused (priced as adamw_torch), no autocast
    assert (s.quant, s.double_quant, s.targets, s.batch, s.grad_accum, s.optim, s.autocast) == (
        "fp4", False, ("q_proj", "v_proj"), 8, 1, "adamw_torch", False)
    notes = " ".join(plan.notes)
    assert "training_args.per_device_train_batch_size=8" in notes and "peft's default for llama" in notes


@pytest.mark.parametrize("lora, train, expected", [
    ({"rr": 16}, {"max_length": 64}, "unknown field lora_config.rr (did you mean r?)"),
    ({"r": 16}, {"max_length": 64, "gradient_acumulation_steps": 2},
     "unknown field training_args.gradient_acumulation_steps (did you mean gradient_accumulation_steps?)"),
    ({"r": 16}, {"per_device_train_batch_size": 1}, "max_seq_length (or max_length) is not set"),
    ({"r": 16, "use_dora": True}, {"max_length": 64}, "lora_config.use_dora changes memory"),
    ({"r": 16}, {"max_length": 64, "optim": "lion_8bit"}, "training_args.optim 'lion_8bit' is not modelled"),
    ({"r": 0}, {"max_length": 64}, "lora_config.r"),
])
def test_bad_input_is_one_qplan_error(lora, train, expected):
    with pytest.raises(QPlanError) as caught:
        preflight("llama-3.1-8b", QUANT, lora, train, gpu="24GB")
    assert expected in str(caught.value)


def test_missing_compute_dtype_is_refused_not_guessed():
    with pytest.raises(QPlanError, match="bnb_4bit_compute_dtype is float32 \\(the BitsAndBytesConfig default\\)"):
        preflight("llama-3.1-8b", {"load_in_4bit": True}, {"r": 8}, {"max_length": 64}, gpu="24GB")


def test_preflight_plans_and_import_planner_stays_light():
    code = ("import sys, planner; assert 'torch' not in sys.modules; "
            "from planner.preflight import WillNotFit, preflight; "
            "plan = preflight('llama-3.1-8b', {'load_in_4bit': True, 'bnb_4bit_compute_dtype': 'bfloat16'}, "
            "{'r': 8}, {'max_length': 512, 'per_device_train_batch_size': 1, 'bf16': True}, gpu='24GB'); "
            "assert plan.fits and planner.WillNotFit is WillNotFit; "
            "assert not {'torch', 'transformers', 'peft'} & set(sys.modules), sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
