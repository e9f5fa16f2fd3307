"""Which ``config.json`` a scenario's ``model`` names: a folder or ``config.json`` path, or any name the
catalogue knows (slug, alias or HF id, :func:`planner.inputs.catalog.find_entry`), whose stored config (with its
provenance in ``profiles/models/<slug>.json``) is written to a folder of its own for
``AutoConfig.from_pretrained``."""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path

from planner.inputs.catalog import find_entry
from planner.errors import QPlanError


def _given_folder(model: str) -> Path | None:
    path = Path(model).expanduser()
    if path.is_file():
        if path.name != "config.json":
            raise QPlanError(f"{path}: the config file must be named config.json (transformers reads its folder)")
        return path.parent
    return path if (path / "config.json").is_file() else None


def load_config(model: str) -> dict:
    folder = _given_folder(model)
    if folder is not None:
        path = folder / "config.json"
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise QPlanError(f"{path} is not valid JSON: {err}") from None
    entry = find_entry(model)
    if entry is None:
        raise QPlanError(f"no config.json for model {model!r}: give a folder or config.json path, or a catalogue name")
    return dict(entry.config)


def config_dir(model: str) -> Path:
    """The folder holding the model's ``config.json``; for a catalogue model, one in a private temp folder."""
    folder = _given_folder(model)
    if folder is not None:
        return folder
    config = load_config(model)
    folder = _private_root() / find_entry(model).slug
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return folder


@cache
def _private_root() -> Path:
    """A folder of this process's own (``mkdtemp``: mode 0700, a fresh name), so no other user can plant a
    link where a catalogue config is written."""
    return Path(tempfile.mkdtemp(prefix="qplan-configs-"))
