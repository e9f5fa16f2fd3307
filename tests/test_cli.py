"""The plan verb end to end, through the console entry point, and the battery of bad inputs."""

import json
import subprocess
import sys

import pytest

from planner.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, timeout=120)


def test_70b_on_24gb_does_not_fit_and_says_what_would(capsys):
    code = main(["--model", "70b", "--gpu", "24GB", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0  # the plan is the answer; `qplan check` exits 1 for a run that will not fit
    assert plan["fits"] is False
    assert plan["headroom_bytes"] < 0
    kinds = {alt["kind"] for alt in plan["alternatives"]}
    assert {"larger-gpu", "more-gpus", "smaller-model"} <= kinds
    more = next(a for a in plan["alternatives"] if a["kind"] == "more-gpus")
    assert more["detail"]["gpus"] >= 2
    # the frozen 4-bit Llama-2-70B alone is larger than a 24 GiB card
    assert plan["breakdown"]["NF4 weights + double-quant constants"] > 24 * 2**30


def test_json_contract_keys(capsys):
    main(["--model", "llama-2-7b", "--gpu", "24GB", "--json"])
    plan = json.loads(capsys.readouterr().out)
    for key in ("model", "gpu", "settings", "breakdown", "peak_bytes", "allocated_peak_bytes", "peak_phase",
                "fits", "headroom_bytes", "recommendations", "alternatives"):
        assert key in plan
    assert plan["fits"] is True
    assert plan["peak_bytes"] + plan["margin_bytes"] <= plan["gpu"]["budget_bytes"]
    assert plan["headroom_bytes"] == plan["gpu"]["budget_bytes"] - plan["peak_bytes"] - plan["margin_bytes"]
    for rec in plan["recommendations"]:
        assert 0 <= rec["headroom_bytes"] < plan["gpu"]["budget_bytes"] - rec["peak_bytes"]  # a margin is kept


def test_fixed_knobs_are_kept(capsys):
    main(["--model", "llama-2-7b", "--gpu", "80GB", "--rank", "32", "--seq-len", "1024", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert {r["settings"]["rank"] for r in plan["recommendations"]} == {32}
    assert {r["settings"]["seq_len"] for r in plan["recommendations"]} == {1024}


def test_rich_output_names_units_and_verdict():
    done = run_cli("--model", "7b", "--gpu", "rtx4090")
    assert done.returncode == 0, done.stderr
    assert "GiB" in done.stdout and "FITS" in done.stdout


def test_expandable_segments_are_planned_when_asked_and_offered_otherwise(capsys):
    """--expandable-segments plans with the allocator terms measured under it (less slack, its own margin);
    without it, the plan notes what the setting would save."""
    main(["--model", "llama-3.1-8b", "--gpu", "24GB", "--rank", "32", "--seq-len", "4096", "--batch", "1", "--json"])
    default = json.loads(capsys.readouterr().out)
    main(["--model", "llama-3.1-8b", "--gpu", "24GB", "--rank", "32", "--seq-len", "4096", "--batch", "1", "--json",
          "--expandable-segments"])
    expandable = json.loads(capsys.readouterr().out)
    assert expandable["settings"]["expandable_segments"] and not default["settings"]["expandable_segments"]
    assert expandable["allocated_peak_bytes"] == default["allocated_peak_bytes"]
    assert expandable["peak_bytes"] < default["peak_bytes"] and expandable["margin_bytes"] < default["margin_bytes"]
    assert "expandable segments" in expandable["gpu"]["margin_rule"]
    assert any("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in note for note in default["notes"])
    assert not any("PYTORCH_CUDA_ALLOC_CONF" in note for note in expandable["notes"])


def test_schema_verb_prints_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "peak_bytes" in schema["properties"]


BAD_INPUTS = [
    ["--model", "no-such-model", "--gpu", "24GB"],
    ["--model", "70b", "--gpu", "24XB"],
    ["--model", "70b", "--gpu", "0GB"],
    ["--model", "70b", "--gpu", "99999TB"],
    ["--model", "7b", "--gpu", "24GB", "--seq-len", "0"],
    ["--model", "7b", "--gpu", "24GB", "--batch", "-1"],
    ["--model", "7b", "--gpu", "24GB", "--rank", "0"],
    ["--model", "7b", "--gpu", "24GB", "--margin", "150%"],
    ["--model", "7b", "--gpu", "24GB", "--gpus", "0"],
    ["--model", "7b", "--gpu", "24GB", "--targets", "q_prj"],
    ["--model", "7b", "--gpu", "24GB", "--optim", "adam"],
    ["--model", "7b", "--gpu", "24GB", "--lora-dropout", "2"],
    ["--model", "/nonexistent/config.json", "--gpu", "24GB"],
    ["--gpu", "24GB"],
    ["--model", "7b", "--gpu", "24GB", "--no-such-flag"],
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=[" ".join(a) for a in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(args):
    done = run_cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("qplan: error:"), done.stderr


def test_broken_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    done = run_cli("--model", str(tmp_path), "--gpu", "24GB")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 0, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}))
    done = run_cli("--model", str(config), "--gpu", "24GB")
    assert done.returncode == 2 and "hidden_size" in done.stderr
    assert config.read_text().startswith("{")  # the user's file is untouched


def test_full_finetune_counts_every_weight_once_and_searches_no_rank(capsys):
    assert main(["--model", "7b", "--gpu", "80GB", "--full", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert "16-bit linear weights" not in plan["breakdown"]
    assert plan["breakdown"]["trainable weights"] == 2 * plan["trainable_params"]
    assert len({r["settings"]["rank"] for r in plan["recommendations"]}) == 1
    assert main(["--model", "7b", "--gpu", "80GB", "--full"]) == 0
    out = capsys.readouterr().out
    assert "full fine-tune of every weight | 16-bit |" in " ".join(out.split()) and "NF4" not in out


def test_the_search_stops_at_rank_64_unless_asked(capsys):
    assert main(["--model", "qwen2.5-7b", "--gpu", "rtx4090", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert max(r["settings"]["rank"] for r in default["recommendations"]) == 64
    assert main(["--model", "qwen2.5-7b", "--gpu", "rtx4090", "--max-rank", "256", "--json"]) == 0
    wider = json.loads(capsys.readouterr().out)
    assert max(r["settings"]["rank"] for r in wider["recommendations"]) == 256


def test_a_narrow_terminal_keeps_every_column(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["--model", "qwen2.5-7b", "--gpu", "rtx4090"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "seq_len" in line and "optimizer" in line)
    assert header.split() == ["r", "seq_len", "batch", "accum", "ckpt", "optimizer", "peak", "spare"]


def test_the_free_change_comes_before_a_bigger_card(capsys):
    assert main(["--model", "qwen2.5-32b", "--gpu", "rtx3090", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not plan["fits"]
    assert plan["alternatives"][0]["kind"] == "no-prepare-kbit"
    assert plan["alternatives"][0]["detail"]["settings"]["prepare_kbit"] is False


def test_version_models_and_gpus(capsys):
    from planner import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"qplan {__version__}"
    assert main(["models", "--json"]) == 0
    models = {m["slug"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["llama-2-70b"]["priced"] and "70b" in models["llama-2-70b"]["aliases"]
    assert models["llama-2-70b"]["params"] == 68_976_648_192 and models["llama-2-70b"]["context"] == 4096
    assert not models["deepseek-v2-lite"]["priced"] and "--trace" in models["deepseek-v2-lite"]["refusal"]
    assert main(["gpus", "--json"]) == 0
    cards = {g["name"]: g for g in json.loads(capsys.readouterr().out)}
    assert cards["rtx4090"]["mib"] == 24564 and cards["t4"]["bf16"] is False
    assert main(["models"]) == 0 and "deepseek-v2-lite" in capsys.readouterr().out


def test_a_full_finetune_that_does_not_fit_names_what_would(capsys):
    assert main(["--model", "7b", "--gpu", "24GB", "--full", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not plan["fits"] and plan["alternatives"]
    assert all("full fine-tune" in alt["summary"] and alt["kind"] != "more-gpus" for alt in plan["alternatives"])
