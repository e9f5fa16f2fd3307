"""Regenerate the data files under ``profiles/`` that are derived from transformers and from the shared
config copies.

    python -m planner.catalog_build [--configs DIR]     # needs transformers; DIR defaults to ../shared/configs

``profiles/architecture_defaults.json``: the class defaults transformers' config classes give the fields
:func:`planner.inputs.architecture.from_config` reads, for configs that leave them out (``null`` where the class
default is ``None``, i.e. derived: ``head_dim`` -> hidden/heads, ``num_key_value_heads`` -> heads; a field the
class does not have is absent, which the modeling code treats the same way).

``profiles/models/<slug>.json``: one catalogue entry per ``DIR/<slug>/config.json``, with its provenance from
``DIR/SOURCES.md`` (HF model id, source, full/partial, notes). The entry's ``config`` is the shared copy with
the keys SOURCES.md marks as not seen in a source removed (listed under ``dropped_unsourced``) and the keys
:data:`CURATION` sets from a cited public source added (``sourced_keys``). Every key the planner reads that
the final config lacks is listed under ``defaults`` with the transformers class default it gets and why that
is right, or a flag that it is unverified. ``params`` is :attr:`Architecture.total_params`;
``tests/test_architecture.py`` checks it against transformers. ``profiles/models/aliases.json`` is
hand-written and not touched here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from planner.inputs.architecture import config_keys, from_config
from planner.profiles import load_profile_json, profiles_dir

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen3_moe")
FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
    "attention_bias", "mlp_bias", "num_local_experts", "num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers", "sliding_window",
)
DEFAULT_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "configs"

FAMILIES = {
    "llama-65b": "llama-1",
    "llama-2-7b": "llama-2", "llama-2-13b": "llama-2", "llama-2-70b": "llama-2",
    "llama-3.1-8b": "llama-3.1", "llama-3.1-70b": "llama-3.1", "llama-3.1-405b": "llama-3.1",
    "llama-3.2-1b": "llama-3.2", "llama-3.2-3b": "llama-3.2",
    "mistral-7b-v0.1": "mistral", "mistral-7b-v0.3": "mistral", "mistral-nemo-base-2407": "mistral",
    "mixtral-8x7b": "mixtral",
    "phi-3-mini-4k": "phi-3",
    "qwen2.5-0.5b": "qwen2.5", "qwen2.5-7b": "qwen2.5", "qwen2.5-14b": "qwen2.5", "qwen2.5-32b": "qwen2.5",
    "qwen2.5-72b": "qwen2.5",
    "qwen3-8b": "qwen3", "qwen3-32b": "qwen3", "qwen3-30b-a3b": "qwen3",
    "gemma-2-2b": "gemma-2", "gemma-2-9b": "gemma-2", "gemma-2-27b": "gemma-2",
    "tinyllama-1.1b": "tinyllama",
}

# Sources found for keys SOURCES.md lists as missing (huggingface.co pages through the `docs` search corpus;
# "find_string id" = a GitHub file the search tool does not name the repository of).
_HUGGYLLAMA = ("https://huggingface.co/huggyllama/llama-65b/blob/refs%2Fpr%2F2/config.json "
               "(huggyllama/llama-65b's own config.json, 'Initial commit' 96fa81c)")
_L31_70B = ("https://huggingface.co/radi-cho/Meta-Llama-3.1-70B-FLUTE/blob/3cf3e93204466631fd9ba41dfbc89260263c955d/config.json "
            "(re-saved Meta-Llama-3.1-70B; its torch_dtype float16 is the re-save's)")
_L31_405B = ("https://huggingface.co/axolotl-ai-co/meta-llama-3_1-405b-hqq-4bit/blob/main/config.json "
             "(_name_or_path meta-llama/Meta-Llama-3.1-405B) and "
             "https://huggingface.co/uiuc-convai/CoALM-405B/blob/refs%2Fpr%2F1/config.json "
             "(snapshot of meta-llama/Llama-3.1-405B-Instruct); both tie_word_embeddings false, rope_theta 500000.0, "
             "llama3 rope_scaling, bfloat16")
_Q25_14B = ("https://huggingface.co/EVA-UNIT-01/EVA-Qwen2.5-14B-v0.0/blob/9ee59d3aca1a3ca2e42cf27e48da538363a233c8/config.json "
            "(_name_or_path Qwen/Qwen2.5-14B, the base model's rms_norm_eps 1e-05 and 131072 positions) and "
            "https://huggingface.co/jebish7/Qwen2.5-14B-Instruct/blob/main/config.json "
            "('Duplicate from Qwen/Qwen2.5-14B-Instruct'): vocab_size 152064, tie_word_embeddings false")
_Q3_30B = ("find_string id 59745501581 (Rust test fixture REAL_QWEN3_MOE_CONFIG_JSON: a 4-bit copy of the original "
           "Qwen3-30B-A3B config, rope_theta 1e6, transformers 4.51.0) and find_string id 71463455676 "
           "('Qwen/Qwen3-30B-A3B (config.json, fields the planner reads)'), both 40960; "
           "https://gitcode.com/Ascend/MindSpeed-RL/blob/master/configs/model/qwen3_30b_a3b.yaml agrees. "
           "The 2507 re-releases say 262144")
_GEMMA2_2B = ("find_string ids 66433955876 and 544934154 (GitHub copies of google/gemma-2-2b's config.json as a "
              "dict, _name_or_path google/gemma-2-2b, transformers 4.44.2, every key but tie_word_embeddings)")
_GEMMA2_27B = ("https://huggingface.co/prithivMLmods/Blaze.1-27B-Reflection/blob/736d075e8bf812f6bee85aab246f9dea431519f6/config.json "
               "and https://huggingface.co/ssg97/gemma-2-27b-it-gptq-int4/blob/758908e2f1c99d822aa4e178e2ba7e807b34809c/config.json "
               "(both _name_or_path google/gemma-2-27b-it, which shares the base architecture; neither has "
               "tie_word_embeddings)")
_GEMMA_TIED = ("Gemma 2 config.json files carry no tie_word_embeddings key (see the copies cited for gemma-2-2b and "
               "gemma-2-27b, and https://huggingface.co/thejaminator/gemma-hook-layer-0-step-2000/commit/33738e3d45f3bc4dc6cba719f54d0513279e2231 "
               "'Copy config.json from google/gemma-2-9b-it'): Gemma2Config's default true applies, so the "
               "output layer shares the embedding")

_NO_HEAD_DIM = {
    "llama-2": "Llama-2 config.json files have no head_dim (llama-2-7b's complete file has none): transformers "
               "derives hidden_size // num_attention_heads",
    "qwen2.5": "Qwen2Config has no head_dim field and qwen2.5-32b's complete file has none: modeling_qwen2 "
               "derives hidden_size // num_attention_heads",
    "cited": "the copies cited in the provenance carry no head_dim: transformers derives "
             "hidden_size // num_attention_heads",
}

# slug -> curation: `drop` = keys of the shared copy that SOURCES.md says were not seen in a source;
# `set` = key -> value taken from `source`; `notes` = key -> why the transformers default is right.
CURATION: dict[str, dict] = {
    "llama-65b": {
        "drop": ("max_position_embeddings", "torch_dtype"),
        "set": {"torch_dtype": "float16"},
        "source": _HUGGYLLAMA,
        "notes": {
            "max_position_embeddings": (
                "absent from huggyllama/llama-65b's config.json, which has max_sequence_length 2048 (not read by "
                "transformers): LlamaConfig's default 2048 applies, LLaMA-1's context length. " + _HUGGYLLAMA),
            "head_dim": "absent from huggyllama/llama-65b's config.json: derived 8192 / 64 = 128",
        },
    },
    "llama-2-13b": {"notes": {"head_dim": _NO_HEAD_DIM["llama-2"]}},
    "llama-2-70b": {"notes": {"head_dim": _NO_HEAD_DIM["llama-2"]}},
    "mistral-7b-v0.1": {"drop": ("torch_dtype",), "notes": {"head_dim": _NO_HEAD_DIM["cited"]}},
    "mistral-7b-v0.3": {"notes": {"head_dim": _NO_HEAD_DIM["cited"] + " (the official Instruct-v0.3 file)"}},
    "qwen2.5-0.5b": {"drop": ("torch_dtype",), "notes": {"head_dim": _NO_HEAD_DIM["qwen2.5"]}},
    "qwen2.5-7b": {"notes": {"head_dim": _NO_HEAD_DIM["qwen2.5"]}},
    "qwen2.5-72b": {"drop": ("torch_dtype",), "notes": {"head_dim": _NO_HEAD_DIM["qwen2.5"]}},
    "tinyllama-1.1b": {"drop": ("torch_dtype",), "notes": {"head_dim": _NO_HEAD_DIM["cited"]}},
    "llama-3.1-8b": {"drop": ("torch_dtype",)},
    "llama-3.1-70b": {
        "drop": ("architectures", "hidden_act", "attention_bias", "torch_dtype"),
        "set": {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "attention_bias": False},
        "source": _L31_70B,
    },
    "llama-3.1-405b": {
        "drop": ("tie_word_embeddings", "rope_theta", "rope_scaling", "architectures", "torch_dtype"),
        "set": {
            "tie_word_embeddings": False, "rope_theta": 500000.0, "architectures": ["LlamaForCausalLM"],
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "torch_dtype": "bfloat16",
        },
        "source": _L31_405B + ". Early copies of the base repo say num_key_value_heads 16; maxtext, the later "
                  "Instruct snapshot and the published 405B size say 8 (kept)",
    },
    "llama-3.2-3b": {
        "drop": ("torch_dtype", "head_dim"),
        "notes": {"head_dim": "derived 3072 / 24 = 128, as the unpruned module shapes printed in the source show"},
    },
    "qwen2.5-14b": {
        "drop": ("vocab_size", "tie_word_embeddings", "torch_dtype", "use_sliding_window"),
        "set": {"vocab_size": 152064, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                "use_sliding_window": False},
        "source": _Q25_14B + " (Qwen2Config's default vocab_size 151936 would be wrong)",
        "notes": {"head_dim": _NO_HEAD_DIM["qwen2.5"]},
    },
    "qwen3-32b": {"notes": {"attention_bias": "Qwen3 has no attention bias: qwen3-8b's published file says false"}},
    "qwen3-30b-a3b": {
        "set": {"max_position_embeddings": 40960, "mlp_only_layers": []},
        "source": _Q3_30B + " (Qwen3MoeConfig's default max_position_embeddings 32768 would be wrong); both "
                  "fixtures also have mlp_only_layers []",
    },
    "gemma-2-2b": {
        "drop": ("vocab_size", "head_dim", "attn_logit_softcapping", "final_logit_softcapping",
                 "query_pre_attn_scalar", "tie_word_embeddings", "torch_dtype", "max_position_embeddings",
                 "sliding_window", "rms_norm_eps", "rope_theta", "hidden_activation", "architectures"),
        "set": {
            "vocab_size": 256000, "head_dim": 256, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
            "query_pre_attn_scalar": 256, "torch_dtype": "float32", "max_position_embeddings": 8192,
            "sliding_window": 4096, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
            "hidden_activation": "gelu_pytorch_tanh", "architectures": ["Gemma2ForCausalLM"], "attention_bias": False,
        },
        "source": _GEMMA2_2B,
        "notes": {"tie_word_embeddings": _GEMMA_TIED},
    },
    "gemma-2-9b": {
        "drop": ("tie_word_embeddings", "torch_dtype"),
        "notes": {"tie_word_embeddings": _GEMMA_TIED},
    },
    "gemma-2-27b": {
        "drop": ("vocab_size", "tie_word_embeddings", "rms_norm_eps", "torch_dtype", "max_position_embeddings",
                 "rope_theta", "hidden_activation", "architectures"),
        "set": {"vocab_size": 256000, "rms_norm_eps": 1e-06, "max_position_embeddings": 8192, "rope_theta": 10000.0,
                "hidden_activation": "gelu_pytorch_tanh", "architectures": ["Gemma2ForCausalLM"], "attention_bias": False},
        "source": _GEMMA2_27B,
        "notes": {"tie_word_embeddings": _GEMMA_TIED},
    },
}


def _class_default(cls, field: str):
    """The dataclass default of ``field`` on a transformers 5 config class, following ``attribute_map``
    aliases both ways (Mixtral's ``num_experts`` -> ``num_local_experts``); ``KeyError`` if it has none."""
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    amap = getattr(cls, "attribute_map", {})
    for name in (field, amap.get(field), *(k for k, v in amap.items() if v == field)):
        if name in fields:
            return fields[name]
    raise KeyError(field)


def architecture_defaults() -> dict:
    import transformers
    from transformers import CONFIG_MAPPING

    defaults = {}
    for model_type in MODEL_TYPES:
        cls = CONFIG_MAPPING[model_type]
        defaults[model_type] = {}
        for field in FIELDS:
            try:
                defaults[model_type][field] = _class_default(cls, field)
            except KeyError:
                continue
    return {
        "source": f"transformers {transformers.__version__}: dataclass field defaults of CONFIG_MAPPING[model_type] "
                  "(null: derived in __post_init__ or by the modeling code; absent: the class has no such field)",
        "defaults": defaults,
    }


def parse_sources(text: str) -> dict[str, dict]:
    """Rows of the SOURCES.md table ``| slug | HF model id | where the content came from | notes |``."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 4 or not re.fullmatch(r"[a-z0-9.\-]+", cells[0]) or cells[0] == "slug":
            continue
        slug, hf_id, source, notes = cells
        completeness = "full" if notes.startswith("**full**") else "partial"
        rows[slug] = {"hf_id": hf_id, "source": source, "completeness": completeness, "notes": notes}
    return rows


# What transformers makes of a None/absent head_dim or num_key_value_heads (see architecture.from_config).
_DERIVED = {"head_dim": "hidden_size // num_attention_heads", "num_key_value_heads": "num_attention_heads"}


def _default_note(key: str, class_defaults: dict, config: dict, completeness: str, curated: dict) -> dict:
    value = class_defaults.get(key)
    entry = {"key": key, "transformers_default": value}
    if value is None and key in _DERIVED:
        heads = config["num_attention_heads"]
        entry["transformers_default"] = config["hidden_size"] // heads if key == "head_dim" else heads
        entry["derived"] = _DERIVED[key]
    if key in curated:
        entry["status"] = "confirmed"
        entry["why"] = curated[key]
    elif completeness == "full":
        entry["status"] = "confirmed"
        entry["why"] = "absent from the complete published file: transformers uses the class default"
    else:
        entry["status"] = "unverified"
        entry["why"] = "not seen in the sources (partial copy): the class default is assumed"
    return entry


def build_entry(slug: str, shared: dict, provenance: dict) -> dict:
    curation = CURATION.get(slug, {})
    config = {k: v for k, v in shared.items() if k != "_name_or_path"}
    dropped = {k: config.pop(k) for k in curation.get("drop", ()) if k in config}
    for key, value in curation.get("set", {}).items():
        if key in dropped and dropped[key] != value:
            raise SystemExit(f"{slug}: shared copy has {key}={dropped[key]!r}, the cited source {value!r}")
        config[key] = value
    model_type = config["model_type"]
    arch = from_config(config, name=slug)
    class_defaults = load_profile_json("architecture_defaults.json")["defaults"][model_type]
    defaults = [
        _default_note(key, class_defaults, config, provenance["completeness"], curation.get("notes", {}))
        for key in config_keys(model_type)
        if key not in config and (key in class_defaults or key in _DERIVED)
    ]
    return {
        "slug": slug,
        "hf_id": provenance["hf_id"],
        "family": FAMILIES[slug],
        "params": arch.total_params,
        "provenance": {
            "completeness": provenance["completeness"],
            "source": provenance["source"],
            "notes": provenance["notes"],
            "shared_copy": f"shared/configs/{slug}/config.json (_name_or_path dropped: hf_id names the model)",
        },
        "dropped_unsourced": {k: v for k, v in dropped.items() if k not in curation.get("set", {})},
        "sourced_keys": {"keys": sorted(curation["set"]), "source": curation["source"]} if curation.get("set") else None,
        "defaults": defaults,
        "config": config,
    }


def build_catalog(configs: Path) -> list[Path]:
    provenance = parse_sources((configs / "SOURCES.md").read_text())
    slugs = sorted(p.parent.name for p in configs.glob("*/config.json"))
    missing = sorted(set(slugs) - set(provenance)) + sorted(set(slugs) - set(FAMILIES))
    if missing:
        raise SystemExit(f"no SOURCES.md row or family for: {', '.join(missing)}")
    out_dir = profiles_dir() / "models"
    out_dir.mkdir(exist_ok=True)
    written = []
    for slug in slugs:
        shared = json.loads((configs / slug / "config.json").read_text())
        path = out_dir / f"{slug}.json"
        path.write_text(json.dumps(build_entry(slug, shared, provenance[slug]), indent=1) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m planner.catalog_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS, help="folder of <slug>/config.json + SOURCES.md")
    args = parser.parse_args(argv)
    path = profiles_dir() / "architecture_defaults.json"
    path.write_text(json.dumps(architecture_defaults(), indent=1) + "\n")
    load_profile_json.cache_clear()
    print(f"wrote {path}")
    for written in build_catalog(args.configs):
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
