"""Which ``config.json`` a scenario's ``model`` names: a folder or file path, or a catalogue slug looked up
in ``profiles/models/<slug>/`` and then ``profiles/suites/configs/<slug>/`` (copies of
``shared/configs``, provenance in ``profiles/suites/configs/SOURCES.md``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import QPlanError
from ..profiles import profiles_dir

SEARCH = ("models", "suites/configs")


def config_dir(model: str) -> Path:
    """The folder holding the model's ``config.json`` (what ``AutoConfig.from_pretrained`` reads)."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.name != "config.json":
            raise QPlanError(f"{path}: the config file must be named config.json (transformers reads its folder)")
        return path.parent
    if (path / "config.json").is_file():
        return path
    for folder in SEARCH:
        candidate = profiles_dir() / folder / model
        if (candidate / "config.json").is_file():
            return candidate
    known = sorted({p.parent.name for folder in SEARCH for p in (profiles_dir() / folder).glob("*/config.json")})
    raise QPlanError(f"no config.json for model {model!r}: give a folder or config.json path, or one of {', '.join(known)}")


def load_config(model: str) -> dict:
    path = config_dir(model) / "config.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise QPlanError(f"{path} is not valid JSON: {err}") from None
