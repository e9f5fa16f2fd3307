"""qplan regress: results files, comparison verdicts, provenance checks and reports, on the synthetic
fixtures in tests/fixtures/regress/ (README there lists what each one holds)."""

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from planner.errors import QPlanError
from planner.regress.compare import compare, parse_tolerance
from planner.files import write_file
from planner.results import ResultsFile, git_state, load_results, write_results
from planner.inputs.units import GiB

FIXTURES = Path(__file__).parent / "fixtures" / "regress"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> ResultsFile:
    return load_results(FIXTURES / name)


def rows(comp) -> dict:
    return {row.scenario: row for row in comp.rows}


# ---- compare verdicts ----------------------------------------------------------------------------

def test_no_regression_within_tolerance_and_exact_deltas():
    comp = compare(load("base.json"), load("new-same.json"))
    assert comp.exit_code == 0
    assert {row.verdict for row in comp.rows} == {"ok"}
    tiny = rows(comp)["tinyllama-r16-s1024"]
    assert tiny.delta_bytes == int(4.05 * 1.005 * GiB) - int(4.05 * GiB)
    assert tiny.delta_pct == pytest.approx(0.5, abs=0.01)
    assert comp.summary.startswith("no regression")


def test_regression_found_names_the_worst_scenario():
    comp = compare(load("base.json"), load("new-regression.json"))
    assert comp.exit_code == 1
    row = rows(comp)["llama3.2-1b-s2048"]
    assert row.verdict == "REGRESSION"
    assert row.delta_pct == pytest.approx(7.9, abs=0.01)
    assert comp.counts == {"REGRESSION": 1, "ok": 3}
    assert "worst regression llama3.2-1b-s2048: +0.42 GiB (+7.9%)" in comp.summary


@pytest.mark.parametrize("tolerance,code", [("7%", 1), ("8%", 0), ("0.41GiB", 1), ("0.43GiB", 0), ("500MiB", 0)])
def test_tolerance_relative_and_absolute(tolerance, code):
    assert compare(load("base.json"), load("new-regression.json"), tolerance=tolerance).exit_code == code


@pytest.mark.parametrize("bad", ["2", "abc%", "-1%", "two GiB", "0GiB"])
def test_bad_tolerance_is_one_clear_error(bad):
    with pytest.raises(QPlanError, match="tolerance"):
        parse_tolerance(bad)


def test_improvement_is_not_a_failure():
    comp = compare(load("base.json"), load("new-improved.json"))
    assert rows(comp)["qwen2.5-0.5b-s4096"].verdict == "improved"
    assert rows(comp)["qwen2.5-0.5b-s4096"].delta_bytes < 0
    assert comp.exit_code == 0


def test_new_oom_fails_and_the_reverse_is_fixed():
    comp = compare(load("base.json"), load("new-oom.json"))
    row = rows(comp)["llama3.2-3b-cap8g"]
    assert (row.verdict, row.note, row.delta_bytes) == ("new-oom", "OOM in backward", None)
    assert row.cells()[1] == "OOM (7.95)"
    assert comp.exit_code == 1
    back = compare(load("new-oom.json"), load("base.json"))
    assert rows(back)["llama3.2-3b-cap8g"].verdict == "fixed"
    assert back.exit_code == 0
    assert rows(compare(load("new-oom.json"), load("new-oom.json")))["llama3.2-3b-cap8g"].verdict == "still-oom"


def test_failed_new_run_is_an_error_verdict(tmp_path):
    new = load("new-same.json")
    new.measurements[0] = new.measurements[0].model_copy(update={"status": "error", "error": "ImportError: bitsandbytes"})
    comp = compare(load("base.json"), new)
    assert rows(comp)["tinyllama-r16-s1024"].verdict == "error"
    assert "bitsandbytes" in rows(comp)["tinyllama-r16-s1024"].note
    assert comp.exit_code == 1


def test_mismatched_suites_are_reported_not_hidden():
    comp = compare(load("base.json"), load("new-other-suite.json"))
    assert rows(comp)["llama3.2-3b-cap8g"].verdict == "missing"
    assert rows(comp)["qwen2.5-0.5b-s8192"].verdict == "added"
    what = {d.what: d for d in comp.differences}
    assert what["scenario set"].base == "1 only here: llama3.2-3b-cap8g"
    assert what["scenario set"].new == "1 only here: qwen2.5-0.5b-s8192"
    assert what["suite"].severity == "warning" and not comp.blocked
    assert comp.exit_code == 0


def test_different_gpu_blocks_unless_allowed():
    comp = compare(load("base.json"), load("new-other-gpu.json"))
    assert comp.blocked and comp.exit_code == 2
    gpu = comp.differences[0]
    assert gpu.what == "GPU" and "H100" in gpu.base and "A100" in gpu.new
    allowed = compare(load("base.json"), load("new-other-gpu.json"), allow_mismatch=True)
    assert allowed.blocked and allowed.exit_code == 0


def test_scenario_defined_differently_blocks():
    new = load("new-same.json")
    m = new.measurements[1]
    changed = m.scenario.model_copy(update={"settings": m.scenario.settings.model_copy(update={"seq_len": 4096})})
    new.measurements[1] = m.model_copy(update={"scenario": changed})
    comp = compare(load("base.json"), new)
    assert comp.exit_code == 2
    diff = [d for d in comp.differences if d.severity == "blocking"][0]
    assert (diff.what, diff.base, diff.new) == ("scenario 'llama3.2-1b-s2048'", "settings.seq_len=2048", "settings.seq_len=4096")
    assert comp.changed.endswith("settings.seq_len=2048 -> settings.seq_len=4096 (1 scenario)")


def test_version_changes_are_context_not_mismatch():
    comp = compare(load("base.json"), load("new-same.json"))
    assert comp.differences == []
    changed = {v.what for v in comp.versions if v.changed}
    assert changed == {"torch", "transformers", "script commit"}
    assert comp.changed == ("torch 2.13.0+cu130 -> 2.14.0+cu130, transformers 5.23.0 -> 5.24.0, "
                            "script commit 333333333333 -> 444444444444")


def test_metric_choice_and_missing_metric():
    comp = compare(load("base.json"), load("new-regression.json"), metric="peak_allocated")
    assert rows(comp)["llama3.2-1b-s2048"].base_bytes == int(4.20 * GiB)
    new = load("new-same.json")
    new.measurements = [m.model_copy(update={"peak_device": None}) for m in new.measurements]
    with pytest.raises(QPlanError, match="records no peak_device for any scenario; it has peak_reserved, peak_allocated"):
        compare(load("base.json"), new, new_path="new.json")


def test_prediction_against_measurement_warns_but_compares():
    pred = load("base.json")
    pred.provenance = pred.provenance.model_copy(update={"kind": "prediction", "environment": None, "gpu": "H100 80GB"})
    comp = compare(pred, load("new-other-gpu.json"))
    assert [d.what for d in comp.differences] == ["kind"]
    assert comp.exit_code == 0


@pytest.mark.parametrize("metric", ["peak_device", "peak_reserved", "peak_allocated"])
def test_real_back_to_back_gpu_runs_are_identical(metric):
    """Two runs of the real harness on one H100 (README): same code, same card -> zero delta, so the 2%
    default tolerance is headroom for other machines and drivers, not for run-to-run noise."""
    comp = compare(load("h100-smoke-a.json"), load("h100-smoke-b.json"), metric=metric, tolerance="0%")
    assert comp.exit_code == 0 and comp.differences == [] and comp.changed == "nothing"
    assert [row.delta_bytes for row in comp.rows] == [0, 0, 0]
    assert all(row.base_bytes > 10**9 for row in comp.rows)


# ---- results files --------------------------------------------------------------------------------

def test_json_lines_form_reads_like_the_document():
    lines, doc = load("base.jsonl"), load("base.json")
    assert lines.measurements == doc.measurements
    assert lines.provenance.environment == doc.provenance.environment
    assert compare(lines, load("new-regression.json")).exit_code == 1


@pytest.mark.parametrize("content,message", [
    (None, "truncated or malformed JSON"),  # truncated.json
    ("", "is empty"),
    ("[1, 2]", "not a qplan results file"),
    ('{"format": "something-else/1"}', "not a qplan results file"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = FIXTURES / "truncated.json" if content is None else tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(QPlanError, match=message) as err:
        load_results(path)
    assert "\n" not in str(err.value)


def test_corrupt_field_names_where(tmp_path):
    doc = json.loads((FIXTURES / "base.json").read_text())
    doc["measurements"][2]["peak_device"] = "six GiB"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(QPlanError, match=r"measurements\.2\.peak_device"):
        load_results(tmp_path / "bad.json")


def test_truncated_json_lines_name_the_line(tmp_path):
    text = (FIXTURES / "base.jsonl").read_text()
    (tmp_path / "cut.jsonl").write_text(text[: len(text) - 40])
    with pytest.raises(QPlanError, match="line 4: truncated or malformed JSON"):
        load_results(tmp_path / "cut.jsonl")


def test_json_lines_from_two_gpus_are_refused(tmp_path):
    a = load("base.json").measurements[:2]
    b = load("new-other-gpu.json").measurements[2:]
    (tmp_path / "mixed.jsonl").write_text("".join(m.model_dump_json() + "\n" for m in a + b))
    with pytest.raises(QPlanError, match="mixes runs from different environments: gpu_name"):
        load_results(tmp_path / "mixed.jsonl")


def test_duplicate_scenarios_and_missing_file(tmp_path):
    doc = json.loads((FIXTURES / "base.json").read_text())
    doc["measurements"].append(doc["measurements"][0])
    (tmp_path / "dup.json").write_text(json.dumps(doc))
    with pytest.raises(QPlanError, match="appears twice"):
        load_results(tmp_path / "dup.json")
    with pytest.raises(QPlanError, match="does not exist"):
        load_results(tmp_path / "nope.json")


def test_write_refuses_to_overwrite_and_round_trips(tmp_path):
    out = tmp_path / "results" / "run.json"
    results = load("base.json")
    write_results(out, results)
    assert load_results(out) == results
    with pytest.raises(QPlanError, match="already exists; pass --force"):
        write_results(out, load("new-same.json"))
    assert load_results(out) == results
    write_results(out, load("new-same.json"), force=True)
    assert load_results(out) == load("new-same.json")
    assert sorted(p.name for p in out.parent.iterdir()) == ["run.json"]  # no temp files left


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "base.json"
    out.write_text("old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(QPlanError, match="disk full"):
        write_file(out, "new", force=True)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["base.json"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_of_a_script(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    script = tmp_path / "train.py"
    script.write_text("print('v1')\n")
    git("add", "train.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v1")
    state = git_state(script)
    assert state.commit == git("rev-parse", "HEAD") and not state.dirty
    script.write_text("print('v2')\n")
    assert git_state(script).dirty
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("")
    assert git_state(outside) is None or git_state(outside).commit != state.commit


# ---- reports ----------------------------------------------------------------------------------------

def test_html_report_embeds_the_png(tmp_path):
    from planner.regress.report import write_report

    pytest.importorskip("matplotlib")
    comp = compare(load("base.json"), load("new-regression.json"))
    (path,) = write_report(comp, tmp_path / "report.html")
    page = path.read_text()
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1))
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert "llama3.2-1b-s2048" in page and "REGRESSION" in page and "+7.9%" in page
    assert "2.13.0+cu130" in page and "2.14.0+cu130" in page


def test_markdown_report_links_the_png_beside_it(tmp_path):
    from planner.regress.report import write_report

    pytest.importorskip("matplotlib")
    comp = compare(load("base.json"), load("new-oom.json"))
    png, md = write_report(comp, tmp_path / "oom report.md")
    assert png == tmp_path / "oom report.png" and png.read_bytes().startswith(PNG_SIGNATURE)
    text = md.read_text()
    assert "![base vs new per scenario](oom%20report.png)" in text
    assert "| scenario | model | base GiB | new GiB | delta GiB | delta % | verdict | note |" in text
    assert "| llama3.2-3b-cap8g | llama-3.2-3b | 7.60 | OOM (7.95) |  |  | **new-oom** | OOM in backward |" in text
    with pytest.raises(QPlanError, match="already exists"):
        write_report(comp, tmp_path / "oom report.md")
    (tmp_path / "oom report.md").unlink()
    with pytest.raises(QPlanError, match="oom report.png already exists"):  # the PNG is protected too
        write_report(comp, tmp_path / "oom report.md")
