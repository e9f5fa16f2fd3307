"""Which model ``--model`` names, as an :class:`~planner.inputs.architecture.Architecture`.

In order: an existing ``config.json`` path or a folder holding one; a catalogue entry
(``profiles/models/<slug>.json``) by slug, Hugging Face id or an alias from ``profiles/models/aliases.json``,
matched case-insensitively; a Hugging Face hub id (``org/name``), of which only ``config.json`` is downloaded
(``huggingface_hub``, imported only then; ``HF_HUB_OFFLINE`` honoured; the file is parsed as JSON, no code runs).
Anything else is one :class:`~planner.errors.QPlanError` naming the closest catalogue names (difflib).
No torch or transformers here: the catalogue files are parsed once per process.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from planner.inputs.architecture import Architecture, from_config
from planner.errors import QPlanError
from planner.profiles import load_profile_json, profiles_dir

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogue model: ``params`` = ``architecture.total_params`` (checked against transformers in
    ``tests/test_architecture.py``); ``config`` is the config.json content the planner reads.

    An entry qplan cannot price (its model_type or a field is not modelled: :func:`from_config` refuses it)
    still resolves by name, with ``params`` from transformers' meta-device build; ``refusal`` holds the one-line
    reason that :attr:`architecture` raises, so planning it refuses."""

    slug: str
    family: str
    params: int
    hf_id: str
    config: dict
    priced: Architecture | None
    refusal: str | None = None

    @property
    def architecture(self) -> Architecture:
        if self.priced is None:
            raise QPlanError(f"{self.slug}: {self.refusal}")
        return self.priced


@cache
def _entries() -> dict[str, CatalogEntry]:
    entries = {}
    for path in sorted((profiles_dir() / "models").glob("*.json")):
        if path.name == "aliases.json":
            continue
        data = load_profile_json(f"models/{path.name}")
        slug = data["slug"]
        try:
            arch, refusal = from_config(data["config"], name=slug), None
        except QPlanError as err:
            arch, refusal = None, str(err)
        entries[slug] = CatalogEntry(
            slug=slug, family=data["family"], params=data["params"], hf_id=data["hf_id"], config=data["config"],
            priced=arch, refusal=refusal,
        )
    return entries


@cache
def _names() -> dict[str, str]:
    """Every accepted catalogue name, lower-cased -> slug."""
    entries = _entries()
    names = {alias.lower(): slug for alias, slug in load_profile_json("models/aliases.json")["aliases"].items()}
    unknown = sorted(f"{alias} -> {slug}" for alias, slug in names.items() if slug not in entries)
    if unknown:
        raise QPlanError(f"profiles/models/aliases.json names models the catalogue lacks: {', '.join(unknown)}")
    for slug, entry in entries.items():
        names[slug.lower()] = slug
        names[entry.hf_id.lower()] = slug
    return names


def aliases_of(slug: str) -> list[str]:
    """The short names ``--model`` accepts for a catalogue entry (``profiles/models/aliases.json``)."""
    return sorted(alias for alias, target in load_profile_json("models/aliases.json")["aliases"].items() if target == slug)


def catalog_models(refused: bool = False) -> list[CatalogEntry]:
    """Every catalogue model qplan prices (with ``refused``: also those it refuses), by family then size."""
    return sorted((e for e in _entries().values() if refused or e.priced),
                  key=lambda e: (e.family, e.params))


def find_entry(spec: str) -> CatalogEntry | None:
    """The catalogue entry a name, HF id or alias stands for (any case), else ``None``."""
    slug = _names().get(spec.strip().lower())
    return _entries()[slug] if slug else None


def resolve_model(spec: str) -> Architecture:
    spec = spec.strip()
    if not spec:
        raise QPlanError("--model is empty: give a catalogue name (e.g. llama-3.1-8b), a config.json path, "
                         "a model folder or a Hugging Face id")
    if len(spec) > 4096:
        raise QPlanError(f"--model is {len(spec)} characters long: give a catalogue name, a path or a hub id")
    path = Path(spec).expanduser()
    if _exists(path):
        return _from_path(path, spec)
    entry = find_entry(spec)
    if entry:
        return entry.architecture
    if spec.endswith(".json") or spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise QPlanError(f"no such file or folder: {spec}")
    if HUB_ID.fullmatch(spec):
        return _from_hub(spec)
    raise QPlanError(f"unknown model {spec!r}: {_suggest(spec)}")


def _exists(path: Path) -> bool:
    """Whether ``path`` names something on disk; a name the file system cannot hold (too long) does not."""
    try:
        return path.exists()
    except OSError:
        return False


def _suggest(spec: str) -> str:
    close = difflib.get_close_matches(spec.lower(), list(_names()), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return ("give a config.json path, a model folder, a Hugging Face id (org/name) or one of: "
            + ", ".join(sorted(_entries())))


def _from_path(path: Path, name: str) -> Architecture:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise QPlanError(f"folder {path} has no config.json")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise QPlanError(f"{file} is not UTF-8 text (byte {err.start}): a config.json is JSON in UTF-8") from None
    except json.JSONDecodeError as err:
        raise QPlanError(f"{file} is not valid JSON: {err}") from None
    except RecursionError:
        raise QPlanError(f"{file} nests JSON too deeply to be a config.json") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise QPlanError(f"{file} is not a usable config.json: {str(err).splitlines()[0]}") from None
    except OSError as err:
        raise QPlanError(f"cannot read {file}: {err.strerror or err}") from None
    try:
        return from_config(config, name=name)
    except QPlanError as err:
        raise QPlanError(f"{file}: {err}") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers a TCP connection within ``timeout`` s (huggingface_hub itself retries a
    dead network for about 24 s). Behind a proxy qplan cannot tell, and lets huggingface_hub try."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _from_hub(repo_id: str) -> Architecture:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError, GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError,
        )
    except ImportError:
        raise QPlanError(f"{repo_id!r} is not in qplan's catalogue and huggingface_hub is not installed to fetch "
                         "its config.json: pass a local config.json instead") from None
    offline_set = os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    offline = offline_set or not _hub_reachable()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retry warnings are not qplan's one line
    try:
        file = hf_hub_download(repo_id, "config.json", local_files_only=offline)
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline_set else "the Hugging Face Hub could not be reached"
        raise QPlanError(f"{why} and config.json of {repo_id} is not in the local Hugging Face cache: "
                         "pass a local config.json or a catalogue name") from None
    except GatedRepoError:
        raise QPlanError(f"{repo_id} is gated: accept its licence on huggingface.co and log in (hf auth login), "
                         "or pass a local config.json") from None
    except RepositoryNotFoundError:
        raise QPlanError(f"no Hugging Face repo {repo_id!r} (or it is private); {_suggest(repo_id)}") from None
    except EntryNotFoundError:
        raise QPlanError(f"Hugging Face repo {repo_id} has no config.json") from None
    except (HFValidationError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QPlanError(f"could not fetch config.json of {repo_id}: {first_line}") from None
    return _from_path(Path(file), repo_id)
