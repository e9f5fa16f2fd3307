"""What every format reader shares: a :class:`Reader` over one tool's flat config that refuses what qplan does
not price, types each value under the tool's own key, and records which keys it took and which defaults it
used; and :class:`Translated`, the result a reader hands to :func:`planner.inputs.config_file.parse_config`.

A key of a tool's config is one of:

- read: it is priced (``micro_batch_size``);
- ignored: it does not change training memory (datasets, output dirs, learning rates, logging...);
- unmodelled: it changes memory in a way qplan does not price (DoRA, DeepSpeed, Liger...). Set to anything
  but an empty value (null, false, "", [], {}), it is refused in one line naming the key;
- anything else: refused in one line too (the closest key qplan reads is suggested), because a key qplan does
  not know may change memory and is never silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import QPlanError
from planner.inputs.config_file import Spelling, plain, show

EMPTY = (None, False, "", [], {}, ())


@dataclass
class Translated:
    """One tool's config as qplan's own sections (``data`` for ``parse_config``) and how it spells them."""

    format: str
    data: Any
    spelling: Spelling | None  # None: qplan's own format, read as it is


class Reader:
    """One tool's config, read key by key (module doc). ``name`` is the tool as messages say it."""

    def __init__(self, data: Any, name: str, read: set[str], ignored: frozenset[str],
                 unmodelled: Mapping[str, str]):
        if not isinstance(data, Mapping):
            raise QPlanError(f"a {name} config must be a mapping of key: value, got {type(data).__name__}")
        self.data = {str(key): plain(value) for key, value in data.items()}
        self.name = name
        self.defaulted: list[str] = []
        for key, value in self.data.items():
            if key in unmodelled and value not in EMPTY:
                raise QPlanError(f"{name} {key}: {unmodelled[key]}; qplan does not price it yet; remove it to check the rest")
            if key not in read and key not in ignored and key not in unmodelled:
                close = difflib.get_close_matches(key, sorted(read), n=1, cutoff=0.7)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise QPlanError(f"{name} key {key!r} is not one qplan reads or knows to have no effect on memory{hint}; "
                                 "remove it to check the rest")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str, default: Any = None, *, note: bool = True) -> Any:
        """The value written, else ``default`` (``None`` in YAML is "not set", as the tools read it); a default
        that changes memory is listed in the notes."""
        value = self.data.get(key)
        if value is None:
            if note and default is not None:
                self.defaulted.append(f"{key}={show(default)}")
            return default
        return value

    def typed(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, note: bool = True) -> Any:
        value = self.get(key, default, note=note)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            want = " or ".join(k.__name__ for k in kinds).replace("str", "string").replace("bool", "true/false")
            raise QPlanError(f"{self.name} {key}: expected {want}, got {show(value)}")
        return value

    def model(self, key: str) -> str:
        """The model the config trains (``base_model``, ``model_name_or_path``): required."""
        value = self.typed(key, str, note=False)
        if value is None:
            raise QPlanError(f"{self.name} {key} is not set: qplan needs the model")
        return value

    def positive(self, key: str, default: int | None = None) -> int | None:
        value = self.typed(key, int, default)
        if value is not None and value < 1:
            raise QPlanError(f"{self.name} {key}: must be at least 1, got {value}")
        return value

    def defaults_note(self) -> list[str]:
        return [f"not set, {self.name} defaults used: " + ", ".join(self.defaulted)] if self.defaulted else []


def packing_note(packed: bool, key: str, seq_len: int, how: str) -> str:
    """What qplan assumes about sequence lengths (it prices every sequence at the full length)."""
    if packed:
        return (f"{how} is on: sequences are packed into rows of {key}={seq_len} tokens, so every micro-batch is "
                "full length, as qplan prices it")
    return (f"{how} is off: each micro-batch is padded to its longest sequence, at most {key}={seq_len}; qplan "
            "prices every sequence at the full length, the worst case")


def quantization_section(bits: int | None, quant_type: str, double_quant: bool, compute_dtype: str | None) -> dict | None:
    """BitsAndBytesConfig fields for 4 or 8 bits (``None``: a 16-bit model)."""
    if bits == 4:
        return {"load_in_4bit": True, "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": double_quant,
                "bnb_4bit_compute_dtype": compute_dtype}
    if bits == 8:
        return {"load_in_8bit": True}
    return None


def targets_value(value: Any, name: str, key: str) -> str | list[str]:
    """A list of module names, or one string (comma-separated names, or all-linear)."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        return parts[0] if len(parts) == 1 else parts
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise QPlanError(f"{name} {key}: expected module names, got {show(value)}")
