"""A decoder-only LLM reduced to the tensor shapes that decide its memory, read from ``config.json``
without importing transformers.

Missing config keys take the default of the transformers config class, kept as data in
``profiles/architecture_defaults.json`` (generated from transformers, version recorded there).
Module names and shapes follow the transformers 5 modeling files, e.g. ``models/llama/modeling_llama.py``;
``tests/test_architecture.py`` checks every catalogue model against a model transformers builds on
the ``meta`` device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .errors import QPlanError
from .profiles import load_profile_json

# model_type -> how its decoder layer is laid out. Anything else uses the Llama layout ("generic").
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen3_moe"}
MOE = {"mixtral", "qwen3_moe"}


@dataclass(frozen=True)
class Linear:
    """One ``nn.Linear`` kind inside every decoder layer: ``count`` instances per layer."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    count: int = 1

    @property
    def weight_numel(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ExpertBank:
    """A transformers 5 MoE weight stored as one 3-D ``nn.Parameter`` (experts, out, in).

    It is not an ``nn.Linear``, so bitsandbytes' ``replace_with_bnb_linear`` leaves it in the model
    dtype and LoRA's ``all-linear`` does not target it (transformers ``integrations/bitsandbytes.py``).
    """

    name: str
    experts: int
    out_features: int
    in_features: int

    @property
    def numel(self) -> int:
        return self.experts * self.out_features * self.in_features


@dataclass(frozen=True)
class Architecture:
    """Shapes of one model; all counts are elements, not bytes."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    max_positions: int
    dtype: str
    linears: tuple[Linear, ...]
    expert_banks: tuple[ExpertBank, ...] = ()
    router_numel: int = 0
    experts_per_token: int = 0
    norm_numel_per_layer: int = 0
    generic: bool = False

    # ---- totals used by the memory model -------------------------------------------------------
    @property
    def attn_width(self) -> int:
        """``a = heads * head_dim``: width of q and of the attention output."""
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def embedding_numel(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_numel(self) -> int:
        """0 when tied: the output layer shares the embedding Parameter."""
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def norm_numel(self) -> int:
        return self.layers * self.norm_numel_per_layer + self.hidden

    @cached_property
    def linear_weight_numel(self) -> int:
        return self.layers * sum(lin.weight_numel * lin.count for lin in self.linears)

    @cached_property
    def linear_bias_numel(self) -> int:
        return self.layers * sum(lin.out_features * lin.count for lin in self.linears if lin.bias)

    @property
    def expert_numel(self) -> int:
        return self.layers * sum(bank.numel for bank in self.expert_banks)

    @property
    def total_params(self) -> int:
        return (
            self.embedding_numel
            + self.lm_head_numel
            + self.norm_numel
            + self.linear_weight_numel
            + self.linear_bias_numel
            + self.expert_numel
            + self.layers * self.router_numel
        )

    @cached_property
    def largest_linear(self) -> Linear:
        return max(self.linears, key=lambda lin: lin.weight_numel)

    def module_param_counts(self) -> dict[str, int]:
        """Parameters per module name (``q_proj``, ``embed_tokens``, ``input_layernorm``...), summed over
        the model: the form ``tests/test_architecture.py`` compares with transformers' meta model."""
        counts: dict[str, int] = {"embed_tokens": self.embedding_numel, "norm": self.hidden}
        if self.lm_head_numel:
            counts["lm_head"] = self.lm_head_numel
        for lin in self.linears:
            counts[lin.name] = counts.get(lin.name, 0) + self.layers * lin.count * (
                lin.weight_numel + (lin.out_features if lin.bias else 0)
            )
        for bank in self.expert_banks:
            counts["experts." + bank.name] = self.layers * bank.numel
        if self.router_numel:
            counts["gate"] = self.layers * self.router_numel
        counts["layer_norms"] = self.layers * self.norm_numel_per_layer
        return counts


def _get(config: dict, key: str, defaults: dict, *alts: str):
    for name in (key, *alts):
        if config.get(name) is not None:
            return config[name]
    if defaults.get(key) is not None:
        return defaults[key]
    raise QPlanError(f"config.json has no {key!r} and its model type has no default for it")


def _positive_int(config: dict, key: str, defaults: dict, *alts: str) -> int:
    value = _get(config, key, defaults, *alts)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise QPlanError(f"config.json field {key!r} must be a positive integer, got {value!r}")
    return value


def from_config(config: dict, name: str = "model") -> Architecture:
    """Build the :class:`Architecture` of a Hugging Face ``config.json`` (already parsed)."""
    if not isinstance(config, dict):
        raise QPlanError("config.json must hold a JSON object")
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers keep the LLM here
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type", "")}
    model_type = str(config.get("model_type") or "")
    all_defaults = load_profile_json("architecture_defaults.json")["defaults"]
    generic = model_type not in LLAMA_LIKE
    defaults = all_defaults.get(model_type if not generic else "llama", {})

    h = _positive_int(config, "hidden_size", defaults, "n_embd", "d_model")
    layers = _positive_int(config, "num_hidden_layers", defaults, "n_layer", "num_layers")
    heads = _positive_int(config, "num_attention_heads", defaults, "n_head")
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    intermediate = _positive_int(config, "intermediate_size", defaults, "n_inner", "ffn_dim")
    vocab = _positive_int(config, "vocab_size", defaults)
    tied = bool(_get(config, "tie_word_embeddings", {"tie_word_embeddings": defaults.get("tie_word_embeddings", False)}))
    max_positions = int(config.get("max_position_embeddings") or defaults.get("max_position_embeddings") or 2048)
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    if not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads:
        raise QPlanError(f"num_key_value_heads={kv_heads!r} must divide num_attention_heads={heads}")

    a, k = heads * head_dim, kv_heads * head_dim
    attn_bias = bool(config.get("attention_bias", defaults.get("attention_bias", False)))
    mlp_bias = bool(config.get("mlp_bias", defaults.get("mlp_bias", False)))
    norms = 2 * h
    expert_banks: tuple[ExpertBank, ...] = ()
    router = experts_per_token = 0

    if model_type == "phi3":
        attention = (Linear("qkv_proj", h, a + 2 * k), Linear("o_proj", a, h))
    else:
        qkv_bias = attn_bias or model_type == "qwen2"  # Qwen2Attention: q/k/v bias=True, o_proj bias=False
        attention = (
            Linear("q_proj", h, a, qkv_bias),
            Linear("k_proj", h, k, qkv_bias),
            Linear("v_proj", h, k, qkv_bias),
            Linear("o_proj", a, h, attn_bias),
        )
    if model_type in MOE:
        experts = _positive_int(config, "num_local_experts", defaults, "num_experts")
        experts_per_token = _positive_int(config, "num_experts_per_tok", defaults)
        expert_dim = int(config.get("moe_intermediate_size") or intermediate)
        if model_type == "qwen3_moe" and (config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1):
            raise QPlanError("Qwen3-MoE with dense layers (mlp_only_layers / decoder_sparse_step) is not modelled yet")
        expert_banks = (
            ExpertBank("gate_up_proj", experts, 2 * expert_dim, h),
            ExpertBank("down_proj", experts, h, expert_dim),
        )
        router = experts * h
        mlp: tuple[Linear, ...] = ()
        intermediate = expert_dim
    elif model_type == "phi3":
        mlp = (Linear("gate_up_proj", h, 2 * intermediate), Linear("down_proj", intermediate, h))
    else:
        mlp = (
            Linear("gate_proj", h, intermediate, mlp_bias),
            Linear("up_proj", h, intermediate, mlp_bias),
            Linear("down_proj", intermediate, h, mlp_bias),
        )
    if model_type == "gemma2":
        norms = 4 * h  # input, post_attention, pre_feedforward, post_feedforward
    if model_type in {"qwen3", "qwen3_moe"}:
        norms += 2 * head_dim  # q_norm, k_norm

    return Architecture(
        name=name,
        model_type=model_type or "unknown",
        hidden=h,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        vocab=vocab,
        tied_embeddings=tied,
        max_positions=max_positions,
        dtype=dtype,
        linears=attention + mlp,
        expert_banks=expert_banks,
        router_numel=router,
        experts_per_token=experts_per_token,
        norm_numel_per_layer=norms,
        generic=generic,
    )
