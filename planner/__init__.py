"""qplan: will this QLoRA fine-tune fit in GPU memory?

``planner.preflight(model, quantization_config, lora_config, training_args, gpu=...)`` and
``planner.WillNotFit`` (:mod:`planner.preflight`), ``planner.QPlanCallback`` (:mod:`planner.integrations`,
imports transformers) are loaded on first use, so ``import planner`` stays light (no torch)."""

import importlib

__version__ = "0.1.0"

_LAZY = {"preflight": ("planner.preflight", None), "WillNotFit": ("planner.preflight", "WillNotFit"),
         "QPlanCallback": ("planner.integrations", "QPlanCallback")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)
