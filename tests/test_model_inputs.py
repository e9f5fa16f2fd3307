"""What qplan refuses, validates and changes about a model before pricing it (issues 12-14):

- model types and shape fields it has no formula for are one QPlanError line pointing to ``--trace``;
- bad field values (string booleans, absurd numbers, NaN, lists, top-k > experts) are one line each;
- MoE LoRA as peft 0.21 builds it: explicit expert targets, dropout 0, names peft ignores;
- Gemma-2 sdpa runs eager (transformers 5.24), with the softcapping tanh outputs priced.
No torch needed except where a test builds the real thing."""

from __future__ import annotations

import dataclasses

import pytest

from planner.errors import QPlanError
from planner.inputs.architecture import LAYOUTS, TRACE_HINT, from_config
from planner.inputs.catalog import find_entry, resolve_model
from planner.inputs.settings import TrainSettings
from planner.memory import activations, logits
from planner.memory.runtime import as_run
from planner.memory.trainable import trainable_params
from planner.pricing.price import PlanRequest, price

SMALL = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 512,
         "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4}


def one_line_refusal(config: dict, match: str) -> str:
    with pytest.raises(QPlanError, match=match) as err:
        from_config(config)
    message = str(err.value)
    assert "\n" not in message
    return message


# ---- refuse, never guess ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["deepseek_v2", "olmoe", "gpt_oss", "olmo2", "falcon", "gpt2"])
def test_unmodelled_model_type_is_refused(model_type):
    message = one_line_refusal({**SMALL, "model_type": model_type}, f"model_type '{model_type}' is not modelled")
    assert "--trace" in message


@pytest.mark.parametrize("field, value, what", [
    ("num_local_experts", 8, "routed experts"), ("num_experts", 64, "routed experts"),
    ("n_routed_experts", 64, "routed experts"), ("kv_lora_rank", 512, "multi-head latent attention"),
    ("q_lora_rank", 1536, "multi-head latent attention"), ("n_shared_experts", 2, "shared experts"),
    ("first_k_dense_replace", 1, "dense layers before the MoE ones"), ("moe_intermediate_size", 1408, "routed experts"),
])
def test_unpriced_field_on_a_modelled_type_is_refused(field, value, what):
    """A Llama config that carries expert or MLA fields is not a Llama: refused, naming the field."""
    message = one_line_refusal({**SMALL, field: value}, field)
    assert what in message and TRACE_HINT in message


def test_null_or_empty_unpriced_fields_are_no_shape_change():
    assert from_config({**SMALL, "q_lora_rank": None, "mlp_only_layers": []}).total_params == from_config(SMALL).total_params


@pytest.mark.parametrize("method", ["gptq", "awq", "fp8", "mxfp4", "compressed-tensors"])
def test_prequantized_checkpoints_are_refused(method):
    one_line_refusal({**SMALL, "quantization_config": {"quant_method": method}}, f"'{method}' quantization_config")


def test_bitsandbytes_quantization_config_is_priced():
    assert from_config({**SMALL, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})


def test_gpt_oss_refused_for_its_type_before_its_mxfp4():
    one_line_refusal(find_entry("gpt-oss-20b").config, "model_type 'gpt_oss' is not modelled")
    gpt_oss_as_llama = {**SMALL, "quantization_config": find_entry("gpt-oss-20b").config["quantization_config"]}
    one_line_refusal(gpt_oss_as_llama, "'mxfp4' quantization_config")


def test_unknown_multimodal_wrapper_is_refused():
    one_line_refusal({"model_type": "llava", "text_config": SMALL}, "model_type 'llava' is a multimodal wrapper")


def test_mixed_sliding_layers_outside_gemma_are_refused():
    qwen = {**SMALL, "model_type": "qwen2", "use_sliding_window": True, "sliding_window": 128, "max_window_layers": 1}
    one_line_refusal(qwen, "sliding window on 1 of 2 layers")
    assert from_config({**qwen, "max_window_layers": 2}).sliding_window is None  # no layer slides
    one_line_refusal({**SMALL, "model_type": "qwen3", "layer_types": ["full_attention", "chunked"]}, "layer_types")


@pytest.mark.parametrize("slug, model_type", [("deepseek-v2-lite", "deepseek_v2"), ("olmoe-1b-7b", "olmoe"),
                                              ("llama-4-scout", "llama4"), ("gpt-oss-20b", "gpt_oss"),
                                              ("olmo-2-7b", "olmo2")])
def test_refused_catalogue_entries_resolve_but_do_not_plan(slug, model_type):
    """The name works (find_entry), planning is one line: DeepSeek-V2-Lite was priced as a 2.69 B dense Llama."""
    assert find_entry(slug).slug == slug
    with pytest.raises(QPlanError, match=f"{slug}: model_type '{model_type}'"):
        price(PlanRequest.named(slug, "24GB"))


def test_cli_refusal_is_one_line_exit_2(capsys):
    from planner.cli import main

    assert main(["--model", "deepseek-v2-lite", "--gpu", "24GB"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "deepseek_v2" in err and "--trace" in err


def test_every_layout_type_has_class_defaults():
    """One table: each modelled type has its class defaults recorded (tools/catalog_build.py MODEL_TYPES)."""
    from planner.profiles import load_profile_json

    assert set(LAYOUTS) == set(load_profile_json("architecture_defaults.json")["defaults"])


# ---- config validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["tie_word_embeddings", "attention_bias", "mlp_bias", "use_cache"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1])
def test_string_or_number_booleans_are_refused(field, value):
    """``bool("false")`` is True: the planner would have tied or biased a model the file says is not."""
    one_line_refusal({**SMALL, field: value}, f"'{field}' must be true or false")


@pytest.mark.parametrize("field", ["max_position_embeddings", "hidden_size", "num_hidden_layers", "vocab_size",
                                   "num_key_value_heads", "head_dim"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), [4096], "4096", 4096.0])
def test_integer_fields_refuse_non_integers(field, value):
    one_line_refusal({**SMALL, field: value}, f"'{field}' must be a positive integer")


def test_huge_numbers_are_refused_in_one_short_line():
    message = one_line_refusal({**SMALL, "max_position_embeddings": 10**400}, "more than any model has")
    assert len(message) < 250


def test_top_k_larger_than_the_experts_is_refused():
    mixtral = {**SMALL, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 8}
    one_line_refusal(mixtral, "num_experts_per_tok=8 but only 4 experts")


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000 + "]" * 100_000, "nests JSON too deeply"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nests JSON too deeply"),
    (b'{"model_type": "llama", "name": "\xe9"}', "is not UTF-8 text"),
    ('{"hidden_size": NaN}', "has no 'model_type'"),
    ('{"model_type": "llama", "hidden_size": 1' + "0" * 5000 + "}", "not a usable config.json"),
])
def test_hostile_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(QPlanError, match=message) as err:
        resolve_model(str(path))
    assert "\n" not in str(err.value)


# ---- MoE LoRA as peft 0.21 builds it ------------------------------------------------------------------------

MIXTRAL = find_entry("mixtral-8x7b").architecture
QWEN3_MOE = find_entry("qwen3-30b-a3b").architecture


def test_mixtral_explicit_expert_targets_count_as_peft():
    """Checked with peft 0.21.2 on a 32-layer meta Mixtral (tests/test_lora_count.py checks 2 layers): w1 and w3
    become the fused gate_up_proj bank at rank 2r, w2 the down_proj bank, the router is not targeted."""
    settings = TrainSettings(rank=16, targets=("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"), lora_dropout=0)
    assert trainable_params(MIXTRAL, settings) == 357_564_416


def test_fused_expert_names_must_be_targeted_together():
    with pytest.raises(QPlanError, match="w1 without w3"):
        trainable_params(MIXTRAL, TrainSettings(targets=("q_proj", "w1")))
    with pytest.raises(QPlanError, match="gate_proj without up_proj"):
        trainable_params(QWEN3_MOE, TrainSettings(targets=("gate_proj", "down_proj")))


def test_moe_dropout_is_planned_as_zero_with_the_reason():
    for targets in (("all-linear",), ("q_proj", "v_proj", "w1", "w3"), ("gate",)):
        notes: list[str] = []
        settings = as_run(MIXTRAL, TrainSettings(targets=targets, lora_dropout=0.05), notes)
        assert settings.lora_dropout == 0 and any("ParamWrapper" in n for n in notes), targets
    notes = []
    assert as_run(MIXTRAL, TrainSettings(targets=("attn",), lora_dropout=0.05), notes).lora_dropout == 0.05
    assert not notes  # attention-only LoRA on an MoE keeps its dropout: no ParamWrapper
    plan = price(PlanRequest.named("qwen3-30b-a3b", "a100-80gb")).plan
    assert plan.settings.lora_dropout == 0 and any("lora_dropout planned as 0" in n for n in plan.notes)


def test_preflight_refuses_moe_dropout_that_peft_would_refuse():
    with pytest.raises(QPlanError, match="set lora_dropout to 0"):
        as_run(QWEN3_MOE, TrainSettings(lora_dropout=0.1), [], strict=True)


def test_names_peft_ignores_get_a_note_and_no_parameters():
    notes: list[str] = []
    settings = as_run(MIXTRAL, TrainSettings(targets=("q_proj", "v_proj", "gate_proj"), lora_dropout=0.05), notes)
    assert any("gate_proj" in n and "ignores" in n for n in notes)
    assert trainable_params(MIXTRAL, settings) == trainable_params(MIXTRAL, TrainSettings(targets=("q_proj", "v_proj")))
    with pytest.raises(QPlanError, match="peft raises"):
        trainable_params(MIXTRAL, TrainSettings(targets=("gate_proj",)))


# ---- Gemma-2 attention and Gemma-3 windows ------------------------------------------------------------------

def test_gemma2_sdpa_is_planned_as_eager_with_a_note():
    gemma = find_entry("gemma-2-9b").architecture
    notes: list[str] = []
    assert as_run(gemma, TrainSettings(attn="sdpa"), notes).attn == "eager"
    assert any("_supports_sdpa = False" in n for n in notes)
    assert as_run(gemma, TrainSettings(attn="flash_attention_2"), []).attn == "flash_attention_2"


def test_gemma2_softcapping_tanh_outputs_are_priced():
    gemma = find_entry("gemma-2-2b").architecture
    assert gemma.softcap and gemma.final_softcap
    plain = dataclasses.replace(gemma, softcap=False, final_softcap=False)
    s = TrainSettings(attn="eager", seq_len=512, batch=2)
    dt = activations.Dtypes.of(s, gemma)
    assert (activations.attention_saved(gemma, s, dt) - activations.attention_saved(plain, s, dt)
            == dt.attention * 2 * gemma.heads * 512 * 512)
    assert logits.logits_memory(gemma, s).saved - logits.logits_memory(plain, s).saved == 2 * 1024 * gemma.vocab
    no_cap = from_config({**find_entry("gemma-2-2b").config, "attn_logit_softcapping": None,
                          "final_logit_softcapping": None})
    assert not no_cap.softcap and not no_cap.final_softcap


def test_gemma3_windows_are_an_upper_bound_stated_in_a_note():
    gemma = find_entry("gemma-3-1b").architecture
    assert gemma.sliding_window == 512 and gemma.qk_norm and gemma.rope_tables == 2
    assert any("22 of 26 layers" in n and "upper bound" in n for n in gemma.notes)
    wrapped = find_entry("gemma-3-4b").architecture
    assert wrapped.model_type == "gemma3_text" and any("vision tower" in n for n in wrapped.notes)
    all_full = from_config({**find_entry("gemma-3-1b").config, "layer_types": ["full_attention"] * 26})
    assert all_full.sliding_window is None and not all_full.notes


def test_peft_default_targets_are_peft_s_for_every_modelled_type():
    """A config file without target_modules gets peft's default: one table per modelled type, as peft has it."""
    pytest.importorskip("peft")
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    from planner.inputs.config_file import PEFT_DEFAULT_TARGETS

    assert PEFT_DEFAULT_TARGETS == {t: tuple(PEFT_TARGETS[t]) for t in LAYOUTS if t in PEFT_TARGETS}


def test_gemma2_softcapping_saves_what_the_formula_adds():
    """On the CPU, a tiny bf16 Gemma-2 in eager attention: the tensors its forward saves for backward grow by
    exactly the tanh outputs qplan adds (layers * b * heads * s^2 and T * V, 2 bytes each)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    shape = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)
    b, s = 2, 32

    def saved_bytes(**caps) -> int:
        config = transformers.Gemma2Config(**shape, attn_implementation="eager", **caps)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).train()
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=torch.randint(0, 512, (b, s)), use_cache=False)
        return sum(storages.values())

    both = saved_bytes()
    final_only = saved_bytes(attn_logit_softcapping=None)
    neither = saved_bytes(attn_logit_softcapping=None, final_logit_softcapping=None)
    gemma = from_config({"model_type": "gemma2", **shape})
    settings = TrainSettings(attn="eager", seq_len=s, batch=b, autocast=False, prepare_kbit=False)  # bf16 stream
    assert gemma.softcap and gemma.final_softcap
    assert both - final_only == gemma.layers * 2 * b * gemma.heads * s * s
    assert final_only - neither == 2 * b * s * gemma.vocab
    plain = dataclasses.replace(gemma, softcap=False)
    dt = activations.Dtypes.of(settings, gemma)
    assert dt.attention == 2
    assert (activations.attention_saved(gemma, settings, dt) - activations.attention_saved(plain, settings, dt)
            == 2 * b * gemma.heads * s * s)
    assert (logits.logits_memory(gemma, settings).saved
            - logits.logits_memory(dataclasses.replace(gemma, final_softcap=False), settings).saved
            == final_only - neither)


def test_preflight_check_of_a_moe_config_with_dropout_is_one_refusal():
    """qplan check of a written Mixtral config with all-linear and lora_dropout 0.05: peft would raise in
    get_peft_model, so the check says so instead of pricing a run that cannot start."""
    from planner.inputs.config_file import parse_config
    from planner.preflight import request_from_config

    config = {"model": "mixtral-8x7b", "gpu": "80GB", "lora": {"r": 8, "target_modules": "all-linear",
                                                              "lora_dropout": 0.05},
              "training": {"max_seq_length": 1024}}
    with pytest.raises(QPlanError, match="lora_dropout=0.05 with all-linear on mixtral"):
        price(request_from_config(parse_config(config)))
    fine = {**config, "lora": {**config["lora"], "lora_dropout": 0.0}}
    assert price(request_from_config(parse_config(fine))).plan.settings.lora_dropout == 0


def test_qwen_sliding_window_follows_transformers():
    """Qwen2Config: use_sliding_window with the class default window 4096 slides layers from max_window_layers on
    (0: all of them, priced exactly as every layer windowed); a partial split is refused."""
    qwen = {**SMALL, "model_type": "qwen2", "use_sliding_window": True}
    assert from_config({**qwen, "max_window_layers": 0}).sliding_window == 4096
    one_line_refusal({**qwen, "max_window_layers": 1}, "sliding window on 1 of 2 layers")
    one_line_refusal({**qwen, "max_window_layers": -1}, "'max_window_layers' must be a whole number")
    one_line_refusal({**qwen, "use_sliding_window": "yes"}, "'use_sliding_window' must be true or false")


def test_a_wrapper_s_prequantized_checkpoint_is_refused():
    wrapped = {**find_entry("gemma-3-4b").config, "quantization_config": {"quant_method": "gptq"}}
    one_line_refusal(wrapped, "'gptq' quantization_config")


@pytest.mark.parametrize("name, content, message", [
    ("run.json", "[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ("run.yaml", "[" * 100_000 + "]" * 100_000, "nests too deeply|is not valid YAML"),
    ("run.json", b'{"model": "7b\xff"}', "is not UTF-8 text"),
    ("run.yaml", b"model: 7b\xff\n", "is not UTF-8 text"),
    ("run.json", '{"model": "7b", "gpus": 1' + "0" * 5000 + "}", "is not a usable config"),
])
def test_hostile_training_configs_are_one_line(tmp_path, name, content, message):
    from planner.inputs.config_file import load_config_file

    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(QPlanError, match=message) as err:
        load_config_file(path)
    assert "\n" not in str(err.value)
