"""Regenerate the data files under ``profiles/`` that are derived from transformers and from the shared
config copies.

    python tools/catalog_build.py [--configs DIR]     # needs transformers; DIR defaults to ../shared/configs

``profiles/architecture_defaults.json``: the class defaults transformers' config classes give the fields
:func:`planner.inputs.architecture.from_config` reads, for configs that leave them out (``null`` where the class
default is ``None``, i.e. derived: ``head_dim`` -> hidden/heads, ``num_key_value_heads`` -> heads; a field the
class does not have is absent, which the modeling code treats the same way).

``profiles/models/<slug>.json``: one catalogue entry per ``DIR/<slug>/config.json``, with its provenance from
``DIR/SOURCES.md`` (HF model id, source, full/partial, notes). The entry's ``config`` is the shared copy with
the keys SOURCES.md marks as not seen in a source removed (listed under ``dropped_unsourced``) and the keys
``tools/catalog_curation.json`` sets from a cited public source added (``sourced_keys``). Every key the planner reads that
the final config lacks is listed under ``defaults`` with the transformers class default it gets and why that
is right, or a flag that it is unverified. ``params`` is :attr:`Architecture.total_params`;
``tests/test_architecture.py`` checks it against transformers. ``pricing_notes`` are the approximations the
architecture states (Gemma-3's window bound, a wrapper priced as its text decoder). An entry ``from_config``
refuses gets ``refused`` (its one-line reason) and ``params`` from transformers' meta-device build instead
(``params_from``; ``meta_build.set`` in the curation patches a file transformers cannot build as is).
``profiles/models/aliases.json`` is hand-written and not touched here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's planner, not an installed one

from planner.errors import QPlanError  # noqa: E402
from planner.inputs.architecture import config_keys, from_config, priced_config  # noqa: E402
from planner.profiles import load_profile_json, profiles_dir  # noqa: E402

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "mixtral", "qwen3_moe")
FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
    "attention_bias", "mlp_bias", "num_local_experts", "num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers", "sliding_window",
)
DEFAULT_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "configs"

CURATION_FILE = Path(__file__).with_name("catalog_curation.json")


def _expand(value, texts: dict):
    """``{NAME}`` inside a curation string stands for ``texts[NAME]`` (a cited source used more than once)."""
    if isinstance(value, str):
        return value.format_map(texts) if "{" in value else value
    if isinstance(value, dict):
        return {k: _expand(v, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, texts) for v in value]
    return value


def load_curation(path: Path = CURATION_FILE) -> tuple[dict[str, str], dict[str, dict]]:
    """``(families, curation)`` from :data:`CURATION_FILE`: slug -> family, and slug -> ``drop`` (keys of the
    shared copy that SOURCES.md says were not seen in a source), ``set`` (key -> value taken from ``source``),
    ``notes`` (key -> why the transformers default is right)."""
    data = json.loads(path.read_text())
    texts = {}
    for name, text in data["texts"].items():  # a text may cite one defined before it
        texts[name] = _expand(text, texts)
    return data["families"], {slug: _expand(c, texts) for slug, c in data["curation"].items() if c}


FAMILIES, CURATION = load_curation()


def _class_default(cls, field: str):
    """The dataclass default of ``field`` on a transformers 5 config class, following ``attribute_map``
    aliases both ways (Mixtral's ``num_experts`` -> ``num_local_experts``); ``KeyError`` if it has none."""
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    amap = getattr(cls, "attribute_map", {})
    for name in (field, amap.get(field), *(k for k, v in amap.items() if v == field)):
        if name in fields:
            return fields[name]
    raise KeyError(field)


def architecture_defaults() -> dict:
    import transformers
    from transformers import CONFIG_MAPPING

    defaults = {}
    for model_type in MODEL_TYPES:
        cls = CONFIG_MAPPING[model_type]
        defaults[model_type] = {}
        for field in FIELDS:
            try:
                defaults[model_type][field] = _class_default(cls, field)
            except KeyError:
                continue
    return {
        "source": f"transformers {transformers.__version__}: dataclass field defaults of CONFIG_MAPPING[model_type] "
                  "(null: derived in __post_init__ or by the modeling code; absent: the class has no such field)",
        "defaults": defaults,
    }


PROVENANCE_HEADER = ["slug", "HF model id", "where the content came from", "notes"]


def parse_sources(text: str) -> dict[str, dict]:
    """Rows of the SOURCES.md table ``| slug | HF model id | where the content came from | notes |``."""
    rows = {}
    header = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells[0] == "slug":  # a table starts: only the provenance tables are read, not the parameter counts
            header = cells
            continue
        if header != PROVENANCE_HEADER or len(cells) != 4 or not re.fullmatch(r"[a-z0-9.\-]+", cells[0]):
            continue
        slug, hf_id, source, notes = cells
        completeness = "full" if notes.startswith("**full**") else "partial"
        rows[slug] = {"hf_id": hf_id, "source": source, "completeness": completeness, "notes": notes}
    return rows


# What transformers makes of a None/absent head_dim or num_key_value_heads (see architecture.from_config).
_DERIVED = {"head_dim": "hidden_size // num_attention_heads", "num_key_value_heads": "num_attention_heads"}


def _default_note(key: str, class_defaults: dict, config: dict, completeness: str, curated: dict) -> dict:
    value = class_defaults.get(key)
    entry = {"key": key, "transformers_default": value}
    if value is None and key in _DERIVED:
        heads = config["num_attention_heads"]
        entry["transformers_default"] = config["hidden_size"] // heads if key == "head_dim" else heads
        entry["derived"] = _DERIVED[key]
    if key in curated:
        entry["status"] = "confirmed"
        entry["why"] = curated[key]
    elif completeness == "full":
        entry["status"] = "confirmed"
        entry["why"] = "absent from the complete published file: transformers uses the class default"
    else:
        entry["status"] = "unverified"
        entry["why"] = "not seen in the sources (partial copy): the class default is assumed"
    return entry


def build_entry(slug: str, shared: dict, provenance: dict) -> dict:
    curation = CURATION.get(slug, {})
    config = {k: v for k, v in shared.items() if k != "_name_or_path"}
    dropped = {k: config.pop(k) for k in curation.get("drop", ()) if k in config}
    for key, value in curation.get("set", {}).items():
        if key in dropped and dropped[key] != value:
            raise SystemExit(f"{slug}: shared copy has {key}={dropped[key]!r}, the cited source {value!r}")
        config[key] = value
    try:
        arch, refusal = from_config(config, name=slug), None
    except QPlanError as err:
        arch, refusal = None, str(err)
    defaults = []
    if arch is not None:
        read = priced_config(config)  # a multimodal wrapper's text_config
        class_defaults = load_profile_json("architecture_defaults.json")["defaults"][arch.model_type]
        defaults = [
            _default_note(key, class_defaults, read, provenance["completeness"], curation.get("notes", {}))
            for key in config_keys(arch.model_type)
            if key not in read and (key in class_defaults or key in _DERIVED)
        ]
    entry = {
        "slug": slug,
        "hf_id": provenance["hf_id"],
        "family": FAMILIES[slug],
        "params": arch.total_params if arch else meta_params(config, curation.get("meta_build", {}).get("set", {})),
        "provenance": {
            "completeness": provenance["completeness"],
            "source": provenance["source"],
            "notes": provenance["notes"],
            "shared_copy": f"shared/configs/{slug}/config.json (_name_or_path dropped: hf_id names the model)",
        },
        "dropped_unsourced": {k: v for k, v in dropped.items() if k not in curation.get("set", {})},
        "sourced_keys": {"keys": sorted(curation["set"]), "source": curation["source"]} if curation.get("set") else None,
        "defaults": defaults,
        "config": config,
    }
    if arch is not None and arch.notes:
        entry["pricing_notes"] = list(arch.notes)
    if arch is None:
        entry["refused"] = refusal
        entry["params_from"] = ("transformers meta-device build (AutoModelForCausalLM.from_config): qplan does not "
                                "price this model" + (f"; built with {curation['meta_build']['why']}"
                                                      if curation.get("meta_build") else ""))
    return entry


def meta_params(config: dict, overrides: dict) -> int:
    """Parameters of ``AutoModelForCausalLM.from_config`` on the meta device (tied weights once), for entries
    qplan refuses; ``overrides`` (``"text_config.key": value``) patch a file transformers cannot build as is."""
    import torch
    import transformers

    config = json.loads(json.dumps(config))
    for dotted, value in overrides.items():
        *path, key = dotted.split(".")
        node = config
        for part in path:
            node = node[part]
        node[key] = value
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    return sum(p.numel() for p in model.parameters())


def build_catalog(configs: Path) -> list[Path]:
    provenance = parse_sources((configs / "SOURCES.md").read_text())
    slugs = sorted(p.parent.name for p in configs.glob("*/config.json"))
    missing = sorted(set(slugs) - set(provenance)) + sorted(set(slugs) - set(FAMILIES))
    if missing:
        raise SystemExit(f"no SOURCES.md row or family for: {', '.join(missing)}")
    out_dir = profiles_dir() / "models"
    out_dir.mkdir(exist_ok=True)
    written = []
    for slug in slugs:
        shared = json.loads((configs / slug / "config.json").read_text())
        path = out_dir / f"{slug}.json"
        path.write_text(json.dumps(build_entry(slug, shared, provenance[slug]), indent=1) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/catalog_build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS, help="folder of <slug>/config.json + SOURCES.md")
    args = parser.parse_args(argv)
    path = profiles_dir() / "architecture_defaults.json"
    path.write_text(json.dumps(architecture_defaults(), indent=1) + "\n")
    load_profile_json.cache_clear()
    print(f"wrote {path}")
    for written in build_catalog(args.configs):
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
