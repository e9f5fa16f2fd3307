"""Regenerate the data files under ``profiles/`` that are derived from transformers.

    python -m planner.catalog_build      # needs transformers

``profiles/architecture_defaults.json``: the defaults transformers' config classes give the fields
qplan reads, for configs that leave them out (e.g. Gemma 2's ``tie_word_embeddings``).
"""

from __future__ import annotations

import json

from .profiles import profiles_dir

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen3_moe")
FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
    "attention_bias", "mlp_bias", "num_local_experts", "num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "decoder_sparse_step",
)


def architecture_defaults() -> dict:
    import transformers
    from transformers import AutoConfig

    defaults = {}
    for model_type in MODEL_TYPES:
        config = AutoConfig.for_model(model_type)
        defaults[model_type] = {f: getattr(config, f) for f in FIELDS if getattr(config, f, None) is not None}
    return {
        "source": f"transformers {transformers.__version__}: AutoConfig.for_model(model_type) attribute values",
        "defaults": defaults,
    }


def main() -> None:
    path = profiles_dir() / "architecture_defaults.json"
    path.write_text(json.dumps(architecture_defaults(), indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
