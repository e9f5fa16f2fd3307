"""What the libraries really run for a model and the settings asked for, before anything is priced.

- peft 0.21 ``tuners/lora/layer.py:ParamWrapper.__init__`` raises ``lora.ParamWrapper does not work with
  lora_dropout != 0`` whenever LoRA adapts an MoE expert bank or router through ``target_parameters`` (all-linear
  on Mixtral / Qwen3-MoE, or their expert names): a plan is made for ``lora_dropout=0``, the only value that
  runs; a pre-flight check of a config that sets it refuses instead.
- transformers 5.24 ``models/gemma2/modeling_gemma2.py``: ``_supports_sdpa = False`` ("sdpa does not support
  softcapping"), so a Gemma-2 loaded without ``attn_implementation`` runs eager attention, and one asked for
  ``sdpa`` is refused by ``from_pretrained``: sdpa plans are made for eager. (transformers 4.4x had
  ``_supports_sdpa = True`` for Gemma-2, e.g. huggingface/transformers at 006e8693; pyproject requires >= 5.0.)
- Expert names of another MoE family that peft drops silently (Mixtral ``gate_proj``) and the approximations
  the architecture states (:attr:`Architecture.notes`) become notes.
"""

from __future__ import annotations

from planner.errors import QPlanError
from planner.inputs.architecture import Architecture
from planner.inputs.settings import TrainSettings
from planner.memory.trainable import expert_targets, ignored_targets

NO_SDPA = {"gemma2": "transformers 5.24 Gemma2 has _supports_sdpa = False (softcapping)"}


def as_run(arch: Architecture, settings: TrainSettings, notes: list[str], strict: bool = False) -> TrainSettings:
    """The settings the run will have, with a note in ``notes`` for each change and approximation. ``strict``
    (a pre-flight check of a written config): a setting the libraries refuse is a :class:`QPlanError`."""
    notes.extend(arch.notes)
    if settings.full_finetune:
        return settings
    chosen = expert_targets(arch, settings.targets)
    if chosen and settings.lora_dropout > 0:
        why = (f"peft 0.21 refuses lora_dropout != 0 when LoRA adapts the expert banks "
               f"({', '.join(sorted(chosen))}: target_parameters, ParamWrapper)")
        if strict:
            raise QPlanError(f"lora_dropout={settings.lora_dropout:g} with {'/'.join(settings.targets)} on "
                             f"{arch.model_type}: {why}; set lora_dropout to 0")
        notes.append(f"lora_dropout planned as 0 instead of {settings.lora_dropout:g}: {why}")
        settings = settings.model_copy(update={"lora_dropout": 0.0})
    ignored = ignored_targets(arch, settings.targets)
    if ignored:
        notes.append(f"target modules {', '.join(ignored)}: no {arch.model_type} module has that name, and peft "
                     "ignores it without a word (not counted)")
    if settings.attn == "sdpa" and arch.model_type in NO_SDPA:
        notes.append(f"attention planned as eager: {NO_SDPA[arch.model_type]}, so it runs eager when no "
                     "attn_implementation is given and refuses attn_implementation='sdpa' (transformers 4.x ran sdpa)")
        settings = settings.model_copy(update={"attn": "eager"})
    return settings
