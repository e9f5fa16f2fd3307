"""qplan: will this QLoRA fine-tune fit in GPU memory?

``from planner.preflight import preflight, WillNotFit`` checks one run; ``planner.WillNotFit`` and
``planner.QPlanCallback`` (:mod:`planner.integrations`, imports transformers) are loaded on first use, so
``import planner`` stays light (no torch).

The stages a plan goes through, one package each: ``inputs`` (what the user named: model, card, settings,
config files) -> ``memory`` (the analytic estimate) -> ``search`` (knobs that fit, smallest change,
alternatives) -> ``pricing`` (the one path from a request to a plan, with its margin and words) -> ``output``
(the plan model, rendering, launch lines). Beside them: ``measure`` (real GPU runs), ``fit`` (calibrating
the measured terms), ``regress`` (comparing runs), ``commands`` (the CLI verbs)."""

import importlib

__version__ = "0.1.0"

_LAZY = {"WillNotFit": ("planner.preflight", "WillNotFit"), "QPlanCallback": ("planner.integrations", "QPlanCallback")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return getattr(module, attr)
