"""What is trained: the LoRA adapters peft adds (which modules, the A/B tensors), or every weight in a
full fine-tune.

peft 0.21 ``tuners/lora/layer.py:LoraLayer.update_layer``: ``lora_A = Linear(in, r)``, ``lora_B = Linear(r, out)``
for every targeted module; ``get_peft_model(autocast_adapter_dtype=True)`` keeps them in float32
(``tuners_utils.py:cast_adapter_dtype``), so weights, gradients and Adam states are float32.
``"all-linear"`` targets every ``nn.Linear``/``Linear4bit`` except the output layer
(``tuners_utils.py:_maybe_include_all_linear_layers``) and, on MoE models, the expert banks and router
through ``target_parameters``.
"""

from __future__ import annotations

from difflib import get_close_matches
from functools import lru_cache

from planner.inputs.architecture import Architecture, Linear
from planner.errors import QPlanError
from planner.inputs.settings import TrainSettings

ADAPTER_BYTES = 4  # float32 (autocast_adapter_dtype=True)
ATTENTION_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"}


@lru_cache(maxsize=256)
def targeted_linears(arch: Architecture, targets: tuple[str, ...]) -> tuple[Linear, ...]:
    """The per-layer linears LoRA wraps. ``all-linear`` = every linear; ``attn`` = the attention projections;
    otherwise module names as in ``LoraConfig.target_modules`` (suffix match on the module name)."""
    names = {lin.name for lin in arch.linears}
    if targets == ("all-linear",):
        return arch.linears
    wanted: set[str] = set()
    for target in targets:
        if target == "attn":
            wanted |= names & ATTENTION_NAMES
        elif target in names:
            wanted.add(target)
        else:
            close = get_close_matches(target, sorted(names | {"all-linear", "attn"}), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise QPlanError(
                f"target module {target!r} is not a linear of this {arch.model_type} model{hint}; "
                f"its linears are {', '.join(sorted(names))}"
            )
    return tuple(lin for lin in arch.linears if lin.name in wanted)


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
    if arch.expert_banks and settings.targets == ("all-linear",):
        tensors += moe_lora_tensors(arch, r)
    return tensors


def moe_lora_tensors(arch: Architecture, r: int) -> list[Tensor]:
    """peft 0.21 turns ``all-linear`` on a transformers 5 MoE into ``target_parameters`` on the expert banks
    and the router (``ParamWrapper``): A ``(k*r*E, in)``, B ``(out, k*r*E)`` per bank, k = 2 for the fused
    ``gate_up_proj``; router A ``(r, h)``, B ``(E, r)``. Checked against ``get_nb_trainable_parameters`` in
    tests/test_architecture.py."""
    tensors: list[Tensor] = []
    for bank in arch.expert_banks:
        width = (2 if bank.name == "gate_up_proj" else 1) * r * bank.experts
        tensors += [(width, bank.in_features, arch.layers), (bank.out_features, width, arch.layers)]
    experts = arch.router_numel // arch.hidden
    tensors += [(r, arch.hidden, arch.layers), (experts, r, arch.layers)]
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
