"""Where qplan's data lives: ``profiles/`` in a checkout, ``planner/_profiles`` in an installed wheel."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from planner.errors import QPlanError

_HERE = Path(__file__).resolve().parent


def profiles_dir() -> Path:
    for candidate in (_HERE / "_profiles", _HERE.parent / "profiles"):
        if candidate.is_dir():
            return candidate
    raise QPlanError("qplan's profiles/ folder is missing from this installation")


@cache
def load_profile_json(relative: str) -> dict:
    path = profiles_dir() / relative
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise QPlanError(f"profile file {relative} is missing from this installation") from None
    except json.JSONDecodeError as err:
        raise QPlanError(f"profile file {relative} is not valid JSON: {err}") from None
