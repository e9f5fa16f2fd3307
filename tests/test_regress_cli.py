"""``qplan regress`` through planner.cli.main: exit codes, refusal to overwrite, and the run / predict verbs
with the measuring harness and model catalogue replaced by stand-ins (no GPU here)."""

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from planner import __version__
from planner.inputs.architecture import from_config
from planner.cli import main
from planner.results import load_results
from planner.results import Scenario, Suite
from planner.inputs.settings import TrainSettings
from planner.inputs.units import GiB

FIXTURES = Path(__file__).parent / "fixtures" / "regress"
TINY_LLAMA = {  # a small Llama-shaped config: enough for the real analytic model to price
    "model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 32000, "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
}


def fx(name: str) -> str:
    return str(FIXTURES / name)


def qplan(*argv) -> int:
    return main(["regress", *map(str, argv)])


# ---- compare: exit codes -------------------------------------------------------------------------

@pytest.mark.parametrize("new,code", [
    ("new-same.json", 0), ("new-improved.json", 0), ("new-other-suite.json", 0),
    ("new-regression.json", 1), ("new-oom.json", 1), ("new-other-gpu.json", 2),
])
def test_compare_exit_codes(new, code, capsys):
    assert qplan("compare", fx("base.json"), fx(new)) == code
    out = capsys.readouterr().out
    assert "llama3.2-1b-s2048" in out or code == 2


def test_different_gpu_says_why_on_one_line_and_allow_mismatch_compares(capsys):
    assert qplan("compare", fx("base.json"), fx("new-other-gpu.json")) == 2
    captured = capsys.readouterr()
    assert "NOT COMPARABLE" in captured.out and "llama3.2-1b-s2048" not in captured.out
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("qplan: error: base and new are not comparable (GPU: NVIDIA H100") and "--allow-mismatch" in line
    assert qplan("compare", fx("base.json"), fx("new-other-gpu.json"), "--allow-mismatch") == 0
    assert "compared anyway" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ("compare", fx("base.json"), fx("truncated.json")),
    ("compare", fx("base.json"), "no-such-file.json"),
    ("compare", fx("base.json"), fx("new-same.json"), "--metric", "peak_nvml"),
    ("compare", fx("base.json"), fx("new-same.json"), "--tolerance", "lots"),
    ("compare", fx("base.json")),
    ("compare", fx("base.json"), fx("new-same.json"), "--report", "out.pdf"),
    (),
    ("frobnicate",),
])
def test_bad_input_exits_2_with_one_line(argv, capsys):
    assert qplan(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qplan: error: ")


def test_json_output_is_the_comparison(capsys):
    assert qplan("compare", fx("base.json"), fx("new-regression.json"), "--json", "--metric", "peak_reserved") == 1
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == 1 and data["metric"] == "peak_reserved"
    row = next(r for r in data["rows"] if r["scenario"] == "llama3.2-1b-s2048")
    assert row["verdict"] == "REGRESSION" and row["base_bytes"] == int(4.62 * GiB)


def test_reports_through_the_cli_refuse_to_overwrite(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    assert qplan("compare", fx("base.json"), fx("new-regression.json"), "--report", html, "--report", md) == 1
    assert html.stat().st_size > 10_000 and (tmp_path / "r.png").is_file() and md.is_file()
    before = html.read_bytes()
    assert qplan("compare", fx("base.json"), fx("new-same.json"), "--report", html) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert html.read_bytes() == before
    assert qplan("compare", fx("base.json"), fx("new-same.json"), "--report", html, "--force") == 0
    assert html.read_bytes() != before and "no regression" in html.read_text()


def test_no_report_when_not_comparable(tmp_path):
    assert qplan("compare", fx("base.json"), fx("new-other-gpu.json"), "--report", tmp_path / "r.html") == 2
    assert not (tmp_path / "r.html").exists()


# ---- predict ------------------------------------------------------------------------------------

@pytest.fixture
def tiny_suite(tmp_path, monkeypatch):
    """A suite file whose model is a folder holding a small Llama config.json, priced by the real analytic
    model. planner.inputs.catalog (resolve_model) is stood in for while it is not there yet."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    suite = Suite(name="tiny", scenarios=[
        Scenario(name="tiny-s1024", model=str(folder), settings=TrainSettings(rank=16, seq_len=1024)),
        Scenario(name="tiny-s4096-cap", model=str(folder), settings=TrainSettings(seq_len=4096), memory_cap_bytes=GiB // 4),
    ])
    (tmp_path / "tiny.json").write_text(suite.model_dump_json())
    try:
        from planner.inputs.catalog import resolve_model
    except ImportError:
        catalog = types.ModuleType("planner.inputs.catalog")
        catalog.resolve_model = lambda spec: from_config(json.loads((Path(spec) / "config.json").read_text()), name="tiny")
        monkeypatch.setitem(sys.modules, "planner.inputs.catalog", catalog)
        resolve_model = catalog.resolve_model
    return types.SimpleNamespace(path=tmp_path / "tiny.json", suite=suite, arch=resolve_model(str(folder)))


def test_predict_writes_predictions_compare_can_read(tmp_path, tiny_suite, capsys):
    from planner.memory.estimate import estimate
    from planner.memory.overhead import select_profile

    out = tmp_path / "pred.json"
    assert qplan("predict", "--suite", tiny_suite.path, "--out", out) == 0
    results = load_results(out)
    info = results.provenance
    assert (info.kind, info.suite, info.qplan_version) == ("prediction", "tiny", __version__)
    assert info.overhead_profile.startswith(select_profile().name)
    first, capped = results.measurements
    est = estimate(tiny_suite.arch, tiny_suite.suite.scenarios[0].settings, select_profile())
    assert (first.status, first.peak_device, first.peak_reserved, first.peak_allocated) == (
        "ok", est.device_peak, est.reserved_peak, est.allocated_peak)
    assert capped.status == "oom" and capped.peak_device > GiB // 4 and "exceeds the 0.25 GiB cap" in capped.error
    assert "wrote 2 predictions" in capsys.readouterr().out
    assert qplan("compare", out, out) == 0


def test_predict_refuses_to_overwrite(tmp_path, tiny_suite):
    out = tmp_path / "pred.json"
    out.write_text("my baseline")
    assert qplan("predict", "--suite", tiny_suite.path, "--out", out) == 2
    assert out.read_text() == "my baseline"
    assert qplan("predict", "--suite", tiny_suite.path, "--out", out, "--force") == 0
    assert load_results(out).provenance.kind == "prediction"


# ---- run ----------------------------------------------------------------------------------------

@pytest.fixture
def harness(monkeypatch):
    """qplan measure's harness with the GPU part stood in for: each scenario 'measures' as in base.json."""
    measured = {m.scenario.name: m for m in load_results(FIXTURES / "base.json").measurements}
    calls = []

    def run_suite(suite, stream, *, on_result=None, **kwargs):
        calls.append((suite.name, Path(stream), kwargs))
        Path(stream).parent.mkdir(parents=True, exist_ok=True)
        done = []
        for scenario in suite.scenarios:
            m = measured[scenario.name].model_copy(update={"scenario": scenario})
            with open(stream, "a") as handle:
                handle.write(m.model_dump_json() + "\n")
            on_result(m)
            done.append(m)
        return done

    def load_suite(spec):
        return Suite(name=str(spec), scenarios=[measured[name].scenario for name in measured][: 1 if spec == "one" else None])

    monkeypatch.setattr("planner.measure.suite.run_suite", run_suite)
    monkeypatch.setattr("planner.measure.suite.load_suite", load_suite)
    monkeypatch.setattr("planner.measure.cuda.require_cuda", lambda gpus=1: None)
    return calls


def test_run_writes_one_results_file_with_provenance(tmp_path, harness, capsys):
    out = tmp_path / "results" / "smoke.json"
    assert qplan("run", "--suite", "smoke", "--out", out, "--timeout", 60) == 0
    ((name, stream, kwargs),) = harness
    assert name == "smoke" and stream.name == "smoke.json.partial.jsonl" and kwargs == {"timeout": 60, "log": None}
    assert not stream.exists()
    results = load_results(out)
    assert results.provenance.kind == "measurement" and results.provenance.environment.gpu_name == "NVIDIA H100 80GB HBM3"
    assert results.measurements == load_results(FIXTURES / "base.json").measurements
    assert "wrote 4 measurements" in capsys.readouterr().out
    assert qplan("compare", out, fx("new-regression.json")) == 1
    assert qplan("run", "--suite", "smoke", "--out", out) == 2  # refuses before measuring anything
    assert len(harness) == 1


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_run_records_the_scripts_commit(tmp_path, harness):
    repo = tmp_path / "repo"
    repo.mkdir()
    script = repo / "train.py"
    script.write_text("# training script under test\n")
    for args in (["init", "-q"], ["add", "train.py"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = tmp_path / "one.json"
    assert qplan("run", "--suite", "one", "--out", out, "--script", script) == 0
    script_info = load_results(out).provenance.script
    assert script_info.path == str(script) and script_info.git.commit == head and not script_info.git.dirty
    assert qplan("run", "--suite", "one", "--out", tmp_path / "two.json", "--script", repo / "missing.py") == 2
