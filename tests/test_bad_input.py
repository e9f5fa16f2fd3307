"""Bad input of every class a fuzzer found gets one line on stderr and exit 2, never a traceback; a closed
stdout keeps the exit code. Run in a subprocess where the CLI's own process-level handling matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GOOD = (EXAMPLES / "seed_70b_24gb.yaml").read_text()


def one_line_exit_2(capsys, *args) -> str:
    code = main(list(map(str, args)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("  r: ", "  lora_r: "), "unknown field lora.lora_r (did you mean r?)"),
    (GOOD.replace("per_device_train_batch_size", "per_device_batch_size"),
     "did you mean per_device_train_batch_size?"),
    (GOOD + "model: llama-2-7b\n", "'model' is given twice"),
    (GOOD.replace("  r: 16", "  r: true").replace("  r: 64", "  r: true").replace("  r: 8", "  r: true"), "lora.r"),
    (GOOD.replace("learning_rate", "learnign_rat"), "unknown field training.learnign_rat"),
])
def test_config_mistakes_are_one_line(tmp_path, capsys, text, expected):
    assert text != GOOD
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert expected in one_line_exit_2(capsys, "check", path)


def test_an_unknown_field_never_lists_a_hundred_names(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(GOOD.replace("learning_rate", "zzzz"))
    assert len(one_line_exit_2(capsys, "check", path)) < 400


def test_nested_100000_deep_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    one_line_exit_2(capsys, "check", path)


def test_a_fifo_config_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "run.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_exit_2(capsys, "check", fifo)


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_bytes(GOOD.encode() + b"\n# \xff\n")
    assert "not UTF-8" in one_line_exit_2(capsys, "check", path)


@pytest.mark.parametrize("args,expected", [
    (["--model", "7b", "--margin", "nan"], "--margin"),
    (["--model", "7b", "--margin", "95%"], "below 90%"),
    (["--model", "x" * 5000], "characters long"),
    (["--model", "y" * 300], "unknown model"),  # longer than a file name may be
    (["--model", "a/" + "y" * 300 + ".json"], "no such file"),
    (["--model", "7b", "--gpu", "9" * 400 + "GB"], "no GPU has that much memory"),
    (["--model", "7b", "--target-batch", "1000000000000"], "--target-batch"),
    (["check", str(EXAMPLES / "seed_70b_24gb.yaml"), "--gpus", "5000"], "between 1 and 1024"),
])
def test_plan_input_mistakes_are_one_line(capsys, args, expected):
    assert expected in one_line_exit_2(capsys, *args)


def test_a_bare_margin_number_is_a_percent(capsys):
    assert main(["--model", "7b", "--gpu", "24GB", "--margin", "10", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["gpu"]["margin_rule"] == "10% of usable memory (--margin)"


def test_optimizer_names_are_the_training_arguments_names(capsys):
    for name in ("adamw_torch_fused", "adamw_bnb_8bit"):
        assert main(["--model", "7b", "--gpu", "24GB", "--optim", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n}\n")[-1] or "{}") == {}


@pytest.mark.parametrize("gpu,code", [("24GB", 1), ("80GB", 0)])
def test_a_closed_stdout_keeps_the_exit_code(gpu, code):
    """``qplan check x.yaml | head -1``: the verdict is the exit code whatever the reader does."""
    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", "check", str(EXAMPLES / "seed_70b_24gb.yaml"),
                             "--gpu", gpu], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).parents[1])
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == code
    assert b"Traceback" not in proc.stderr.read()


def test_validate_margin_nan_is_one_line(capsys):
    runs = Path(__file__).parents[1] / "profiles" / "measurements" / "core-h100.jsonl"
    assert "--margin" in one_line_exit_2(capsys, "validate", runs, "--margin", "nan")


def test_compare_with_no_scenario_in_common_is_refused(tmp_path, capsys):
    base = json.loads((Path(__file__).parent / "fixtures" / "regress" / "base.json").read_text())
    renamed = json.loads(json.dumps(base))
    for m in renamed["measurements"]:
        m["scenario"]["name"] += "-renamed"
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "new.json").write_text(json.dumps(renamed))
    assert "no scenario in common" in one_line_exit_2(
        capsys, "regress", "compare", tmp_path / "base.json", tmp_path / "new.json")


def test_seq_len_past_the_context_is_noted(capsys):
    assert main(["--model", "7b", "--gpu", "80GB", "--seq-len", "8192", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert any("beyond the model's max_position_embeddings (4096)" in note for note in plan["notes"])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_one_line_and_keeps_the_exit_code():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "planner.cli", "check", str(EXAMPLES / "seed_70b_24gb.yaml")],
                              stdout=full, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "qplan: cannot write to stdout: No space left on device"


def test_a_baseline_with_a_zero_peak_is_refused_at_reading(tmp_path, capsys):
    fixtures = Path(__file__).parent / "fixtures" / "regress"
    base = json.loads((fixtures / "base.json").read_text())
    next(m for m in base["measurements"] if m["status"] == "ok")["peak_device"] = 0
    (tmp_path / "base.json").write_text(json.dumps(base))
    err = one_line_exit_2(capsys, "regress", "compare", tmp_path / "base.json", fixtures / "new-same.json",
                          "--report", tmp_path / "r.html")
    assert "peak_device 0 is not a peak" in err and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("content,expected", [(b'{"name": "x", "scenarios": []}', "at least 1 item"),
                                              (b'{"name": "\xff"}', "not UTF-8")])
def test_a_suite_with_no_scenarios_or_bad_bytes_is_one_line(tmp_path, capsys, content, expected):
    suite = tmp_path / "suite.json"
    suite.write_bytes(content)
    assert expected in one_line_exit_2(capsys, "regress", "predict", "--suite", suite, "--out", tmp_path / "o.json")
