"""What is trained: the LoRA adapters peft adds (which modules, the A/B tensors), or every weight in a
full fine-tune.

peft 0.21 ``tuners/lora/layer.py:LoraLayer.update_layer``: ``lora_A = Linear(in, r)``, ``lora_B = Linear(r, out)``
for every targeted module; ``get_peft_model(autocast_adapter_dtype=True)`` keeps them in float32
(``tuners_utils.py:cast_adapter_dtype``), so weights, gradients and Adam states are float32.
``"all-linear"`` targets every ``nn.Linear``/``Linear4bit`` except the output layer
(``tuners_utils.py:_maybe_include_all_linear_layers``) and, on MoE models, the expert banks and router
through ``target_parameters``. Explicit lists name the experts as transformers 4 did (Mixtral ``w1``/``w2``/``w3``,
Qwen3-MoE ``gate_proj``/``up_proj``/``down_proj``, the router ``gate``): peft maps them onto the 3-D banks
(:data:`PEFT_EXPERT_TARGETS`).
"""

from __future__ import annotations

from difflib import get_close_matches
from functools import lru_cache

from planner.inputs.architecture import Architecture, Linear
from planner.errors import QPlanError
from planner.inputs.settings import TrainSettings

ADAPTER_BYTES = 4  # float32 (autocast_adapter_dtype=True)
ATTENTION_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"}
ROUTER = "gate.weight"
# peft 0.21 utils/transformers_weight_conversion.py (_MOE_TARGET_MODULE_MAPPING, _MODEL_TO_CONVERSION_PATTERN:
# qwen3_moe converts like qwen2_moe): target module name -> the 3-D bank (or router weight) it becomes. Names
# mapped to one fused bank must be targeted together (peft raises otherwise); the fused bank gets rank k*r.
PEFT_EXPERT_TARGETS = {
    "mixtral": {"w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj", "gate": ROUTER},
    "qwen3_moe": {"gate_proj": "gate_up_proj", "up_proj": "gate_up_proj", "down_proj": "down_proj", "gate": ROUTER},
}


@lru_cache(maxsize=256)
def targeted_linears(arch: Architecture, targets: tuple[str, ...]) -> tuple[Linear, ...]:
    """The per-layer linears LoRA wraps. ``all-linear`` = every linear; ``attn`` = the attention projections;
    otherwise module names as in ``LoraConfig.target_modules`` (suffix match on the module name)."""
    names = {lin.name for lin in arch.linears}
    if targets == ("all-linear",):
        return arch.linears
    wanted: set[str] = set()
    expert_names = set(PEFT_EXPERT_TARGETS.get(arch.model_type, {}))
    other_moe = {name for table in PEFT_EXPERT_TARGETS.values() for name in table} if arch.expert_banks else set()
    for target in targets:
        if target == "attn":
            wanted |= names & ATTENTION_NAMES
        elif target in names:
            wanted.add(target)
        elif target in expert_names or target in other_moe:
            continue  # an expert bank (expert_targets), or a name peft ignores on this MoE (ignored_targets)
        else:
            close = get_close_matches(target, sorted(names | {"all-linear", "attn"}), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise QPlanError(
                f"target module {target!r} is not a linear of this {arch.model_type} model{hint}; "
                f"its linears are {', '.join(sorted(names))}"
            )
    chosen = tuple(lin for lin in arch.linears if lin.name in wanted)
    if not chosen and not expert_targets(arch, targets):
        raise QPlanError(f"none of the target modules {', '.join(targets)} is in this {arch.model_type} model "
                         "(peft raises: target modules not found)")
    return chosen


@lru_cache(maxsize=256)
def expert_targets(arch: Architecture, targets: tuple[str, ...]) -> dict[str, int]:
    """The MoE parameters peft adapts through ``target_parameters``: bank name (or :data:`ROUTER`) -> how many
    target names feed it (the rank multiplier k of a fused bank). ``all-linear``: every bank and the router."""
    if not arch.expert_banks:
        return {}
    table = PEFT_EXPERT_TARGETS[arch.model_type]
    if targets == ("all-linear",):
        return {**{bank.name: 2 if bank.name == "gate_up_proj" else 1 for bank in arch.expert_banks}, ROUTER: 1}
    feeds: dict[str, set[str]] = {}
    for target in targets:
        if target in table:
            feeds.setdefault(table[target], set()).add(target)
    for param, names in feeds.items():
        needed = {name for name, p in table.items() if p == param}
        if names != needed:
            raise QPlanError(f"target modules {', '.join(sorted(names))} without {', '.join(sorted(needed - names))}: "
                             f"peft refuses, they are fused into {arch.model_type}'s {param}; target them together")
    return {param: len(names) for param, names in feeds.items()}


def ignored_targets(arch: Architecture, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Expert names of another MoE family (Mixtral ``gate_proj``): no module of this model has them, and peft
    drops them without a word when another target matches."""
    if not arch.expert_banks or targets == ("all-linear",):
        return ()
    known = {lin.name for lin in arch.linears} | set(PEFT_EXPERT_TARGETS[arch.model_type]) | {"attn"}
    return tuple(t for t in targets if t not in known)


Tensor = tuple[int, int, int]  # (rows, cols, how many in the model)


def trainable_tensors(arch: Architecture, settings: TrainSettings) -> list[Tensor]:
    """``(rows, cols, how many)`` of every trainable tensor. LoRA: A is ``r x in``, B is ``out x r`` per
    targeted module; full fine-tune: every weight of the model."""
    if settings.full_finetune:
        return full_model_tensors(arch)
    r = settings.rank
    tensors: list[Tensor] = []
    for lin in targeted_linears(arch, settings.targets):
        copies = arch.layers * lin.count
        tensors += [(r, lin.in_features, copies), (lin.out_features, r, copies)]
    return tensors + moe_lora_tensors(arch, settings.targets, r)


def moe_lora_tensors(arch: Architecture, targets: tuple[str, ...], r: int) -> list[Tensor]:
    """peft 0.21 adapts the expert banks and router it targets (:func:`expert_targets`) with ``ParamWrapper``:
    A ``(k*r*E, in)``, B ``(out, k*r*E)`` per bank, k = the names fused into it (2 for ``gate_up_proj``: peft's
    ``rank_pattern`` gives it k*r); router A ``(r, h)``, B ``(E, r)``. Checked against
    ``get_nb_trainable_parameters`` in tests/test_lora_count.py and tests/test_architecture.py."""
    tensors: list[Tensor] = []
    chosen = expert_targets(arch, targets)
    for bank in arch.expert_banks:
        if bank.name in chosen:
            width = chosen[bank.name] * r * bank.experts
            tensors += [(width, bank.in_features, arch.layers), (bank.out_features, width, arch.layers)]
    if ROUTER in chosen:
        tensors += [(r, arch.hidden, arch.layers), (arch.router_numel // arch.hidden, r, arch.layers)]
    return tensors


def full_model_tensors(arch: Architecture) -> list[Tensor]:
    tensors = [(arch.vocab, arch.hidden, 1 if arch.tied_embeddings else 2), (1, arch.hidden, 1)]
    tensors += [(lin.out_features, lin.in_features, arch.layers * lin.count) for lin in arch.linears]
    tensors += [(1, lin.out_features, arch.layers * lin.count) for lin in arch.linears if lin.bias]
    tensors += [(bank.experts * bank.out_features, bank.in_features, arch.layers) for bank in arch.expert_banks]
    if arch.router_numel:
        tensors.append((arch.router_numel // arch.hidden, arch.hidden, arch.layers))
    tensors.append((1, arch.norm_numel_per_layer, arch.layers))
    return tensors


def trainable_params(arch: Architecture, settings: TrainSettings) -> int:
    """LoRA: ``N_lora = sum over targeted modules of r*(in+out)`` (what ``get_nb_trainable_parameters`` reports)."""
    return sum(rows * cols * copies for rows, cols, copies in trainable_tensors(arch, settings))


def trainable_bytes_per_param(settings: TrainSettings) -> int:
    """float32 LoRA adapters (peft's default), or 16-bit ones when kept in the model dtype; a full fine-tune
    trains the bf16 weights themselves."""
    return 2 if settings.full_finetune or not settings.adapter_fp32 else ADAPTER_BYTES
