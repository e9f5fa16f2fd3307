"""planner.inputs.architecture against the models transformers builds.

- Every catalogue model: parameters per module name and in total equal those of
  ``AutoModelForCausalLM.from_config`` on the ``meta`` device (no memory, fast), built from the same config.json.
- Small configs that leave keys out or set biases the modeling code ignores: same comparison, so the
  class-default and bias rules in ``from_config`` are checked too.
- The catalogue's ``defaults`` records state the value transformers really gives each missing key.
- MoE experts under bitsandbytes 4-bit: a tiny Mixtral / Qwen3-MoE checkpoint is saved and loaded with
  ``BitsAndBytesConfig(load_in_4bit=True)`` on the CPU to see which weights become ``Params4bit``.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from planner.inputs.architecture import config_keys, from_config, priced_config
from planner.errors import QPlanError
from planner.inputs.catalog import catalog_models
from planner.profiles import load_profile_json, profiles_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def load_tool(name: str):
    """A developer script under tools/ (not part of the package), imported from its file."""
    path = Path(__file__).parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


catalog_build = load_tool("catalog_build")
DEFAULT_CONFIGS, architecture_defaults, build_catalog = (
    catalog_build.DEFAULT_CONFIGS, catalog_build.architecture_defaults, catalog_build.build_catalog)

ENTRIES = {entry.slug: entry for entry in catalog_models()}
REFUSED = {entry.slug: entry for entry in catalog_models(refused=True) if entry.priced is None}


def hf_config(config: dict, tmp_path: Path):
    """What transformers reads from this config.json (written out, then ``AutoConfig.from_pretrained``)."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    return transformers.AutoConfig.from_pretrained(tmp_path)


def meta_model(config: dict, tmp_path: Path):
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config(config, tmp_path))


def module_counts(model) -> dict[str, int]:
    """Parameters per module name, in the naming of ``Architecture.module_param_counts``: the module that
    holds the parameter (``q_proj``, ``gate``, ``lm_head``...), ``experts.<param>`` for 3-D expert weights,
    ``layer_norms`` for every norm inside the decoder layers. Tied weights are counted once."""
    counts: Counter = Counter()
    for name, param in model.named_parameters():
        parts = name.split(".")
        owner = parts[-2]
        if "layers" in parts and owner == "experts":
            key = "experts." + parts[-1]
        elif "layers" in parts and owner.endswith("norm"):
            key = "layer_norms"
        else:
            key = owner
        counts[key] += param.numel()
    return dict(counts)


def test_catalogue_is_not_empty():
    assert len(ENTRIES) >= 38
    assert {"llama-2-70b", "llama-3.1-405b", "mixtral-8x7b", "qwen3-30b-a3b", "gemma-2-9b", "gemma-3-27b", "phi-4",
            "qwen3-0.6b", "llama-3.3-70b", "mistral-small-24b", "smollm2-1.7b"} <= set(ENTRIES)
    assert set(REFUSED) == {"deepseek-v2-lite", "olmoe-1b-7b", "llama-4-scout", "gpt-oss-20b", "olmo-2-7b"}


@pytest.mark.parametrize("slug", sorted(ENTRIES))
def test_catalogue_model_matches_transformers(slug, tmp_path):
    """Gemma-3 4B/12B/27B files are Gemma3ForConditionalGeneration: their text decoder (gemma3_text,
    Gemma3ForCausalLM) is what is priced and compared."""
    entry = ENTRIES[slug]
    arch = entry.architecture
    model = meta_model(priced_config(entry.config), tmp_path)
    expected = module_counts(model)
    assert arch.module_param_counts() == expected
    assert arch.total_params == sum(expected.values()) == sum(p.numel() for p in model.parameters())
    assert entry.params == arch.total_params


@pytest.mark.parametrize("slug", sorted(ENTRIES))
def test_catalogue_defaults_are_what_transformers_uses(slug, tmp_path):
    """Each key the entry says it leaves to transformers: the recorded value is what the config gives."""
    entry = ENTRIES[slug]
    record = load_profile_json(f"models/{slug}.json")
    read = priced_config(entry.config)
    cfg = hf_config(read, tmp_path)
    for item in record["defaults"]:
        key = item["key"]
        assert key not in read and key in config_keys(read["model_type"])
        if key == "head_dim":
            got = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        else:
            got = getattr(cfg, key)
        assert got == item["transformers_default"], (slug, key)
        assert item["status"] == "confirmed", f"{slug}: {key} left to an unverified default"


# Published parameter totals of the refused models (shared/configs/SOURCES.md, meta-device builds).
REFUSED_PARAMS = {"deepseek-v2-lite": 15_706_484_224, "olmoe-1b-7b": 6_919_161_856, "gpt-oss-20b": 20_914_757_184,
                  "llama-4-scout": 107_769_861_120, "olmo-2-7b": 7_298_617_344}


@pytest.mark.parametrize("slug", sorted(REFUSED_PARAMS))
def test_refused_entry_params_are_the_meta_build(slug, tmp_path):
    """Entries qplan refuses carry transformers' own count (llama-4-scout built with the bool its strict config
    class wants for attn_temperature_tuning), and planning them is one refusal naming the model type."""
    entry = REFUSED[slug]
    config = json.loads(json.dumps(entry.config))
    if slug == "llama-4-scout":
        config["text_config"]["attn_temperature_tuning"] = True
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    assert entry.params == sum(p.numel() for p in model.parameters()) == REFUSED_PARAMS[slug]
    with pytest.raises(QPlanError, match=r"is not modelled|multimodal wrapper") as err:
        entry.architecture
    assert "--trace" in str(err.value) and "\n" not in str(err.value)


# (model_type, config overrides): keys left out or set where the modeling code ignores or derives them.
EDGE_CONFIGS = {
    "mistral-no-kv-heads": ("mistral", {"num_attention_heads": 16}),  # MistralConfig default: 8 KV heads, not 16
    "mistral-attention-bias-ignored": ("mistral", {"num_key_value_heads": 2, "attention_bias": True}),
    "qwen2-bias-rules": ("qwen2", {"num_key_value_heads": 2, "attention_bias": True}),  # q/k/v bias, o none
    "qwen2-no-kv-heads": ("qwen2", {"num_attention_heads": 64}),  # Qwen2Config default 32 KV heads
    "qwen3-no-head-dim": ("qwen3", {"num_key_value_heads": 2}),  # Qwen3Config default head_dim 128
    "gemma2-defaults": ("gemma2", {}),  # head_dim 256 and 4 KV heads from the class, tied lm_head
    "llama-biases": ("llama", {"attention_bias": True, "mlp_bias": True, "head_dim": 48}),
    "llama-null-kv-heads": ("llama", {"num_key_value_heads": None, "tie_word_embeddings": True}),
    "phi3-no-kv-heads": ("phi3", {}),
    "mixtral-num-experts-alias": ("mixtral", {"num_experts": 3, "num_experts_per_tok": 1}),
    "qwen3-moe-defaults": ("qwen3_moe", {"num_experts": 8}),  # moe_intermediate_size 768, top-8 from the class
}
SMALL = {"vocab_size": 33000, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,  # vocab > Phi-3 pad id
         "num_attention_heads": 8}


@pytest.mark.parametrize("case", sorted(EDGE_CONFIGS))
def test_class_defaults_and_bias_rules_match_transformers(case, tmp_path):
    model_type, overrides = EDGE_CONFIGS[case]
    config = {"model_type": model_type, **SMALL, **overrides}
    arch = from_config(config, name=case)
    expected = module_counts(meta_model(config, tmp_path))
    assert arch.module_param_counts() == expected
    assert arch.total_params == sum(expected.values())


def test_architecture_defaults_file_is_current():
    """The class defaults in profiles/architecture_defaults.json are those of the installed transformers.

    The provenance line names the transformers release that generated the file; a newer release with the same
    defaults passes, one that changes a default fails here.
    """
    committed = load_profile_json("architecture_defaults.json")["defaults"]
    assert committed == json.loads(json.dumps(architecture_defaults()["defaults"]))


def test_use_cache_defaults_to_true_in_every_config_class():
    """from_config reads ``use_cache`` with True when the file leaves it out: the default of every class."""
    from transformers import CONFIG_MAPPING

    assert all(CONFIG_MAPPING[model_type]().use_cache is True for model_type in catalog_build.MODEL_TYPES)
    llama = {**SMALL, "model_type": "llama"}
    assert from_config(llama).use_cache and not from_config({**llama, "use_cache": False}).use_cache


@pytest.mark.skipif(not (DEFAULT_CONFIGS / "SOURCES.md").is_file(), reason="shared/configs not present")
def test_catalogue_files_are_what_the_build_writes(tmp_path, monkeypatch):
    """Rebuilding from shared/configs into a scratch profiles/ gives the committed entries byte for byte."""
    scratch = tmp_path / "profiles"
    (scratch / "models").mkdir(parents=True)
    (scratch / "architecture_defaults.json").write_text((profiles_dir() / "architecture_defaults.json").read_text())
    monkeypatch.setattr(catalog_build, "profiles_dir", lambda: scratch)
    for path in build_catalog(DEFAULT_CONFIGS):
        assert path.read_text() == (profiles_dir() / "models" / path.name).read_text(), path.name


# ---- MoE experts under bitsandbytes 4-bit ------------------------------------------------------------------

TINY_MOE = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "head_dim": 16},
}


@pytest.fixture(scope="module", params=sorted(TINY_MOE))
def moe_4bit(request, tmp_path_factory):
    """``(architecture, saved parameters, load)``: a tiny random MoE checkpoint saved to disk; ``load()`` is a
    real ``from_pretrained`` with ``BitsAndBytesConfig(load_in_4bit=True)`` (NF4, double quant, bf16 compute)
    on the CPU, a fresh model per call."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    config = {"model_type": request.param, "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, **TINY_MOE[request.param]}
    torch.manual_seed(0)
    original = transformers.AutoModelForCausalLM.from_config(hf_config(config, tmp_path), dtype=torch.bfloat16)
    original.save_pretrained(tmp_path / "ckpt")
    quant = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )

    def load():
        return transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path / "ckpt", quantization_config=quant, device_map="cpu", dtype=torch.bfloat16,
        )

    return from_config(config), dict(original.named_parameters()), load


def test_bnb_4bit_leaves_moe_experts_unquantized(moe_4bit):
    """transformers 5.23 + bitsandbytes 0.50: only the ``nn.Linear`` modules (attention) become ``Params4bit``;
    the 3-D expert weights and the router stay bf16 ``nn.Parameter`` holding the checkpoint's values."""
    bnb = pytest.importorskip("bitsandbytes")
    arch, saved, load = moe_4bit
    params = dict(load().named_parameters())
    quantized = {name.split(".")[-2] for name, p in params.items() if isinstance(p, bnb.nn.Params4bit)}
    assert quantized == {lin.name for lin in arch.linears}  # quantization did happen, on the linears only
    experts = {name: p for name, p in params.items() if ".experts." in name}
    assert experts and sum(p.numel() for p in experts.values()) == arch.expert_numel
    for name, p in experts.items():
        assert type(p) is torch.nn.Parameter and p.dtype == torch.bfloat16 and p.dim() == 3, name
        assert torch.equal(p.data, saved[name].data), name
    routers = {name: p for name, p in params.items() if name.endswith("mlp.gate.weight")}
    assert routers and sum(p.numel() for p in routers.values()) == arch.layers * arch.router_numel
    assert all(type(p) is torch.nn.Parameter and p.dtype == torch.bfloat16 for p in routers.values())


def test_peft_all_linear_trains_moe_experts_and_router(moe_4bit):
    """peft 0.21.2: ``prepare_model_for_kbit_training`` casts the unquantized experts to float32, and
    ``target_modules="all-linear"`` wraps the attention linears *and* the expert banks and router
    (``target_parameters``), with the trainable count of ``memory.trainable`` (``moe_lora_tensors``)."""
    peft = pytest.importorskip("peft")
    from planner.inputs.settings import TrainSettings
    from planner.memory.trainable import moe_lora_tensors, trainable_params

    arch, _, load = moe_4bit
    model = peft.prepare_model_for_kbit_training(load(), use_gradient_checkpointing=False)
    experts = [p for name, p in model.named_parameters() if ".experts." in name]
    assert experts and all(p.dtype == torch.float32 for p in experts)

    r = 4
    lora = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules="all-linear", lora_dropout=0.0))
    config = lora.peft_config["default"]
    assert set(config.target_modules) == {lin.name for lin in arch.linears}
    assert set(config.target_parameters) == {bank.name for bank in arch.expert_banks} | {"gate.weight"}
    trainable, _ = lora.get_nb_trainable_parameters()
    linears = arch.layers * sum(r * (lin.in_features + lin.out_features) for lin in arch.linears)
    experts_and_router = sum(rows * cols * n for rows, cols, n in moe_lora_tensors(arch, ("all-linear",), r))
    assert experts_and_router > 0
    assert trainable == linears + experts_and_router == trainable_params(arch, TrainSettings(rank=r, lora_dropout=0.0))
