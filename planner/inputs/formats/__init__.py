"""Training configs of other tools (axolotl, LLaMA-Factory, ``trl sft``) read into qplan's own sections
(:class:`~planner.inputs.config_file.RunConfig`), one module per tool, and :func:`detect`, which tells them apart.

Detection, on the top-level keys of the mapping:

1. ``model``, ``quantization``, ``lora`` or ``training`` -> ``qplan`` (its own format; no other tool has these);
2. ``base_model``, ``adapter``, ``micro_batch_size``, ``sequence_len`` or ``lora_target_linear`` -> ``axolotl``;
3. ``finetuning_type``, ``stage``, ``lora_rank``, ``lora_target``, ``cutoff_len``, ``quantization_bit``,
   ``flash_attn`` or ``template`` -> ``llamafactory``;
4. otherwise ``use_peft``, ``model_name_or_path``, ``use_bnb_nested_quant``, ``lora_task_type``,
   ``dataset_name`` or ``max_length`` -> ``trl``.

A mapping that matches two of 1-3 is refused (say which with ``--format``), as is one that matches none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.errors import QPlanError
from planner.inputs.config_file import SECTIONS, Spelling
from planner.inputs.formats import axolotl, llamafactory, trl
from planner.inputs.formats.common import Translated

FORMATS = ("qplan", "axolotl", "llamafactory", "trl")
READERS = {"axolotl": axolotl.translate, "llamafactory": llamafactory.translate, "trl": trl.translate}
VERSIONS = {"axolotl": axolotl.VERSION, "llamafactory": llamafactory.VERSION, "trl": trl.VERSION}


def detect(data: Any) -> str:
    """The format of a parsed config (module doc); one :class:`QPlanError` line when it cannot tell."""
    if not isinstance(data, Mapping):
        raise QPlanError(f"expected a mapping of key: value, got {type(data).__name__}")
    keys = {str(key) for key in data}
    found = [name for name, match in (
        ("qplan", bool(keys & {"model", *SECTIONS})), ("axolotl", axolotl.detect_score(keys)),
        ("llamafactory", llamafactory.detect_score(keys)),
    ) if match]
    if len(found) > 1:
        raise QPlanError(f"this config has keys of both {found[0]} and {found[1]}; say which with --format")
    if found:
        return found[0]
    if trl.detect_score(keys):
        return "trl"
    raise QPlanError("cannot tell which tool this config is for (no model, base_model, model_name_or_path...); "
                     "say it with --format qplan|axolotl|llamafactory|trl")


def translate(data: Any, fmt: str = "auto") -> Translated:
    """``data`` of format ``fmt`` (``auto``: :func:`detect`) as qplan's sections, with the tool's spelling."""
    fmt = detect(data) if fmt == "auto" else fmt
    if fmt == "qplan":
        return Translated("qplan", data, None)
    if fmt not in READERS:
        raise QPlanError(f"--format {fmt}: expected auto or one of {', '.join(FORMATS)}")
    return READERS[fmt](data)


__all__ = ["FORMATS", "Spelling", "Translated", "detect", "translate"]
