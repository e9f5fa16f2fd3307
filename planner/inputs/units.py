"""Byte units. qplan computes in bytes and prints GiB (2**30 bytes), saying so.

Sizes typed by people are parsed deliberately:
- ``24GiB`` / ``24G`` / ``24GB`` for a *GPU* all mean 24 GiB of device memory: card makers sell a
  "24GB" card with 24 GiB of DRAM (an RTX 4090 reports 24564 MiB in nvidia-smi). What a program can
  use is that less what the driver keeps; the GPU catalogue holds the real nvidia-smi figures.
- ``MB``/``MiB``/``M`` likewise mean MiB, ``TB``/``TiB``/``T`` TiB.
"""

from __future__ import annotations

import re

from planner.errors import QPlanError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(t|tb|tib|g|gb|gib|m|mb|mib)?\s*$", re.IGNORECASE)
_UNIT = {"t": TiB, "g": GiB, "m": MiB}


def parse_size(text: str, *, what: str = "size", default_unit: str = "g") -> int:
    """``"24GB"`` -> 25769803776 bytes. Decimal and binary suffixes both mean binary units (see module doc)."""
    match = _SIZE.match(str(text))
    if not match:
        raise QPlanError(f"cannot read {what} {text!r}: write it like 24GB, 24GiB, 24G or 80GB")
    if len(match.group(1)) > 12:
        raise QPlanError(f"{what} {text[:20]}...: no GPU has that much memory")
    number, unit = float(match.group(1)), (match.group(2) or default_unit)[0].lower()
    size = int(number * _UNIT[unit])
    if size <= 0:
        raise QPlanError(f"{what} {text!r} must be larger than zero")
    return size


def gib(nbytes: float) -> float:
    return nbytes / GiB


def fmt_gib(nbytes: float, digits: int = 2) -> str:
    """``fmt_gib(3 * GiB) == "3.00 GiB"``."""
    return f"{nbytes / GiB:.{digits}f} GiB"


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_percent(text: str, *, what: str, below: float) -> float:
    """``"5%"``, ``"5"`` or ``"0.05"`` -> 0.05: a number with ``%``, or a bare number of 1 or more, is a
    percent; a bare number below 1 is a fraction. The result must lie in ``[0, below)``."""
    match = _PERCENT.match(str(text))
    if not match:
        raise QPlanError(f"{what} {text!r}: write a percentage like 5%")
    number = float(match.group(1))
    share = number / 100 if match.group(2) or number >= 1 else number
    if not share < below:
        raise QPlanError(f"{what} {text!r} must be below {below:.0%}")
    return share
