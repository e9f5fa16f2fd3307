"""Whether a trace can be asked for here: ``QPLAN_TRACE`` (``auto``, the default; ``always``; ``never``) and,
for ``auto``, whether torch, transformers, peft and bitsandbytes are installed (looked up, not imported).
``qplan check``, ``preflight()`` and ``QPlanCallback`` trace by default where they do, since they run where
training runs; ``qplan`` traces only with ``--trace``."""

from __future__ import annotations

import importlib.util
import os

from planner.errors import QPlanError

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")
SETTINGS = ("auto", "always", "never")


def trace_by_default() -> bool:
    setting = os.environ.get("QPLAN_TRACE", "auto").strip().lower() or "auto"
    if setting not in SETTINGS:
        raise QPlanError(f"QPLAN_TRACE={setting!r}: use auto, always or never")
    if setting != "auto":
        return setting == "always"
    return all(importlib.util.find_spec(name) is not None for name in LIBRARIES)
