"""planner.inputs.catalog: what ``--model`` accepts, and one clear error for everything else. No network: the hub
path is exercised offline or with ``hf_hub_download`` replaced."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from planner.inputs.catalog import catalog_models, find_entry, resolve_model
from planner.cli import main
from planner.errors import QPlanError
from planner.profiles import load_profile_json

REPO = Path(__file__).resolve().parents[1]
ENTRIES = {entry.slug: entry for entry in catalog_models()}
ALIASES = load_profile_json("models/aliases.json")["aliases"]
SMALL = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 512,
         "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


# ---- the catalogue ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, slug", [
    ("7b", "llama-2-7b"), ("13b", "llama-2-13b"), ("70b", "llama-2-70b"), ("65b", "llama-65b"),
    ("8b", "llama-3.1-8b"), ("405b", "llama-3.1-405b"), ("1b", "llama-3.2-1b"), ("3b", "llama-3.2-3b"),
    ("llama-2-70b", "llama-2-70b"), ("llama-3.1-8b", "llama-3.1-8b"), ("mistral-7b", "mistral-7b-v0.3"),
    ("mixtral-8x7b", "mixtral-8x7b"), ("qwen2.5-72b", "qwen2.5-72b"), ("gemma-2-9b", "gemma-2-9b"),
    ("phi-3-mini", "phi-3-mini-4k"), ("qwen3-8b", "qwen3-8b"),
    ("meta-llama/Llama-2-70b-hf", "llama-2-70b"), ("META-LLAMA/LLAMA-2-70B-HF", "llama-2-70b"),
    ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b"), ("  Llama-3.1-8B  ", "llama-3.1-8b"),
    ("huggyllama/llama-65b", "llama-65b"), ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
])
def test_names_resolve_to_their_entry(spec, slug, no_network):
    arch = resolve_model(spec)
    assert arch.name == slug
    assert arch is ENTRIES[slug].architecture


def test_every_slug_hf_id_and_alias_resolves(no_network):
    for slug, entry in ENTRIES.items():
        assert resolve_model(slug).name == slug
        assert resolve_model(entry.hf_id).name == slug
    for alias, slug in ALIASES.items():
        assert find_entry(alias.upper()).slug == slug, alias


def test_entries_carry_family_params_and_provenance():
    families = {slug: entry.family for slug, entry in ENTRIES.items()}
    assert families["llama-2-70b"] == families["llama-2-7b"] == "llama-2"
    assert families["llama-65b"] == "llama-1" and families["llama-3.2-1b"] == "llama-3.2"
    for slug, entry in ENTRIES.items():
        record = load_profile_json(f"models/{slug}.json")
        assert entry.params == entry.architecture.total_params > 0
        assert record["provenance"]["completeness"] in {"full", "partial"} and record["provenance"]["source"]
        assert record["hf_id"].count("/") == 1
    models = catalog_models()
    assert models == sorted(models, key=lambda e: (e.family, e.params))


def test_published_sizes():
    """Parameter counts the model cards state, to their printed precision."""
    published = {"llama-2-7b": 6.74e9, "llama-2-13b": 13.0e9, "llama-2-70b": 69.0e9, "llama-3.1-8b": 8.03e9,
                 "llama-3.1-70b": 70.6e9, "llama-3.1-405b": 405.9e9, "mixtral-8x7b": 46.7e9}
    for slug, size in published.items():
        assert abs(ENTRIES[slug].params - size) / size < 0.003, slug


def test_missing_keys_decided_with_sources():
    """The keys SOURCES.md flags as missing: the value the planner ends up with, and a source for it."""
    tie = {slug: ENTRIES[slug].architecture.tied_embeddings for slug in ENTRIES}
    assert tie["llama-3.1-405b"] is False and tie["qwen2.5-14b"] is False
    assert tie["gemma-2-2b"] is tie["gemma-2-9b"] is tie["gemma-2-27b"] is True
    assert ENTRIES["qwen2.5-14b"].architecture.vocab == 152064  # Qwen2Config's default would say 151936
    assert ENTRIES["gemma-2-2b"].architecture.vocab == 256000 and ENTRIES["gemma-2-2b"].architecture.head_dim == 256
    assert ENTRIES["llama-65b"].architecture.max_positions == 2048
    assert ENTRIES["qwen3-30b-a3b"].architecture.max_positions == 40960  # Qwen3MoeConfig's default is 32768
    sourced = {"llama-3.1-405b": "tie_word_embeddings", "qwen2.5-14b": "vocab_size",
               "qwen3-30b-a3b": "max_position_embeddings", "gemma-2-2b": "head_dim"}
    for slug, key in sourced.items():
        record = load_profile_json(f"models/{slug}.json")["sourced_keys"]
        assert key in record["keys"] and ("https://" in record["source"] or "find_string id" in record["source"])


# ---- paths -----------------------------------------------------------------------------------------------

def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_config_file_and_model_folder(tmp_path):
    file = write(tmp_path / "m" / "config.json", SMALL)
    by_file = resolve_model(str(file))
    by_dir = resolve_model(str(file.parent))
    assert by_file.hidden == by_dir.hidden == 256 and by_file.kv_heads == 4
    assert by_dir.name == str(file.parent)
    other_name = write(tmp_path / "other.json", {**SMALL, "hidden_size": 512})
    assert resolve_model(str(other_name)).hidden == 512


def test_local_folder_wins_over_the_catalogue(tmp_path, monkeypatch):
    write(tmp_path / "7b" / "config.json", SMALL)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("7b").hidden == 256


@pytest.mark.parametrize("spec, message", [
    ("", "--model is empty"),
    ("./no/such/config.json", "no such file or folder"),
    ("missing.json", "no such file or folder"),
    ("a/b/c", "no such file or folder"),
])
def test_bad_paths(spec, message):
    with pytest.raises(QPlanError, match=message):
        resolve_model(spec)


def test_folder_without_config(tmp_path):
    with pytest.raises(QPlanError, match="has no config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("content, message", [
    ('{"hidden_size": 4096,', "is not valid JSON"),
    ("\xff\xfe", "is not UTF-8 text"),
    ("[1, 2, 3]", "must hold a JSON object"),
    ('"llama"', "must hold a JSON object"),
    ({**SMALL, "hidden_size": 0}, "'hidden_size' must be a positive integer, got 0"),
    ({**SMALL, "num_hidden_layers": -2}, "'num_hidden_layers' must be a positive integer, got -2"),
    ({**SMALL, "vocab_size": 3.5}, "'vocab_size' must be a positive integer"),
    ({**SMALL, "intermediate_size": True}, "'intermediate_size' must be a positive integer"),
    ({**SMALL, "num_key_value_heads": 0}, "'num_key_value_heads' must be a positive integer"),
    ({**SMALL, "num_key_value_heads": 3}, "must divide num_attention_heads"),
    ({k: v for k, v in SMALL.items() if k != "hidden_size"}, "has no 'hidden_size'"),
    ({k: v for k, v in SMALL.items() if k != "vocab_size"}, "has no 'vocab_size'"),
    ({}, "has no 'model_type'"),
])
def test_bad_config_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    if isinstance(content, str):
        path.write_bytes(content.encode("latin-1"))
    else:
        write(path, content)
    with pytest.raises(QPlanError, match=message) as err:
        resolve_model(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = write(tmp_path / "config.json", "[]")
    assert main(["--model", str(path), "--gpu", "24GB"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qplan: error:") and "must hold a JSON object" in err and "\n" not in err


# ---- unknown names ---------------------------------------------------------------------------------------

def test_unknown_name_suggests_close_ones():
    with pytest.raises(QPlanError, match=r"unknown model 'lama-3.1-8b': did you mean llama-3\.1-8b") as err:
        resolve_model("lama-3.1-8b")
    assert "\n" not in str(err.value)


def test_unknown_name_without_close_match_lists_the_catalogue():
    with pytest.raises(QPlanError, match="one of: deepseek-v2-lite, gemma-2-27b") as err:
        resolve_model("zzzz")
    assert "qwen3-8b" in str(err.value)


# ---- Hugging Face hub ids --------------------------------------------------------------------------------

def test_offline_without_cache_is_one_clear_error(monkeypatch, tmp_path, no_network):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(QPlanError, match="HF_HUB_OFFLINE is set and config.json of qplan-test/no-such-model "
                                         "is not in the local Hugging Face cache"):
        resolve_model("qplan-test/no-such-model")


def test_hub_download_reads_only_config_json(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    file = write(tmp_path / "snapshot" / "config.json", {**SMALL, "hidden_size": 768})
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(file)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arch = resolve_model("some-org/Some-Model-7B")
    assert arch.hidden == 768 and arch.name == "some-org/Some-Model-7B"
    assert calls == [("some-org/Some-Model-7B", "config.json", {"local_files_only": True})]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("planner.inputs.catalog._hub_reachable", lambda: True)
    resolve_model("some-org/Some-Model-7B")
    assert calls[-1][2] == {"local_files_only": False}
    monkeypatch.setattr("planner.inputs.catalog._hub_reachable", lambda: False)
    resolve_model("some-org/Some-Model-7B")
    assert calls[-1][2] == {"local_files_only": True}  # no network: the cache only, at once


def _hub_error(name: str):
    errors = pytest.importorskip("huggingface_hub.errors")
    cls = getattr(errors, name)
    err = cls.__new__(cls)  # these carry an HTTP response; the message is all resolve_model reads
    Exception.__init__(err, "404 Client Error")
    return err


@pytest.mark.parametrize("error, message", [
    ("GatedRepoError", "is gated: accept its licence"),
    ("RepositoryNotFoundError", "no Hugging Face repo 'meta-llama/llama2-70b-hf'.*did you mean"),
    ("RemoteEntryNotFoundError", "has no config.json"),
    ("HfHubHTTPError", "could not fetch config.json of meta-llama/llama2-70b-hf: 404 Client Error"),
])
def test_hub_errors_are_one_clear_error(monkeypatch, error, message):
    hub = pytest.importorskip("huggingface_hub")
    exc = _hub_error(error)

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(hub, "hf_hub_download", fail)
    with pytest.raises(QPlanError, match=message):
        resolve_model("meta-llama/llama2-70b-hf")


# ---- the planning path stays light -----------------------------------------------------------------------

def test_resolving_imports_no_torch_and_is_fast():
    code = (
        "import sys, time; t = time.perf_counter(); from planner.inputs.catalog import resolve_model, catalog_models; "
        "resolve_model('70b'); resolve_model('meta-llama/Llama-3.1-8B'); catalog_models(); "
        "dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules]; "
        "print(heavy, dt)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    heavy, seconds = out.rsplit("]", 1)
    assert heavy + "]" == "[]"
    assert float(seconds) < 0.2


def test_an_unreachable_hub_is_one_line_within_seconds(monkeypatch, tmp_path):
    import time

    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "https://qplan-no-such-host.invalid")
    start = time.perf_counter()
    with pytest.raises(QPlanError, match="the Hugging Face Hub could not be reached and config.json of org/model"):
        resolve_model("org/model")
    assert time.perf_counter() - start < 5


# ---- DeepSeek-R1 distills: aliases only where the shapes are identical -------------------------------------

# Shape keys of the distills' config.json, copied from the re-saves cited in aliases.json's notes.
_DISTILL_COMMON = {"tie_word_embeddings": False, "max_position_embeddings": 131072}
DISTILLS = {
    "deepseek-r1-distill-llama-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                     "head_dim": 128, "vocab_size": 128256, **_DISTILL_COMMON},
    "deepseek-r1-distill-llama-70b": {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                                      "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                                      "head_dim": 128, "vocab_size": 128256, **_DISTILL_COMMON},
    "deepseek-r1-distill-qwen-7b": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                                    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                                    "vocab_size": 152064, "use_sliding_window": False, **_DISTILL_COMMON},
    "deepseek-r1-distill-qwen-14b": {"model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 13824,
                                     "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
                                     "vocab_size": 152064, "use_sliding_window": False, **_DISTILL_COMMON},
    "deepseek-r1-distill-qwen-32b": {"model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 27648,
                                     "num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8,
                                     "vocab_size": 152064, "use_sliding_window": False, **_DISTILL_COMMON},
}


@pytest.mark.parametrize("alias", sorted(DISTILLS))
def test_distill_aliases_point_at_identical_architectures(alias):
    from planner.inputs.architecture import from_config

    target = find_entry(alias).architecture
    distill = from_config(DISTILLS[alias], name=target.name)
    assert distill.module_param_counts() == target.module_param_counts()
    assert (distill.max_positions, distill.tied_embeddings, distill.vocab) == (
        target.max_positions, target.tied_embeddings, target.vocab)
    assert find_entry("deepseek-ai/" + alias).slug == find_entry(alias).slug


def test_the_qwen_1_5b_distill_is_not_aliased():
    assert find_entry("deepseek-r1-distill-qwen-1.5b") is None
