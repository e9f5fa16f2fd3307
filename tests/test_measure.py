"""qplan measure on the CPU: the core suite, scenario choice, worker arguments, the no-CUDA and
no-overwrite paths, OOM/error recording, the cap arithmetic, and the whole worker on a tiny model."""

import json
import sys

import pytest

from planner.errors import QPlanError
from planner.measure import cap as caps
from planner.measure.suite import load_suite, measure_one, parse_shard, select
from planner.results import Measurement, Scenario

TINY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 176,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
    "max_position_embeddings": 256, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
TINY_SETTINGS = {"seq_len": 32, "batch": 2, "grad_accum": 2, "rank": 8, "autocast": False}


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    return folder


# ---- the suite ------------------------------------------------------------------------------------
def test_core_suite_covers_what_it_promises():
    suite = load_suite("core")
    scenarios = suite.scenarios
    settings = [s.settings for s in scenarios]
    assert len(scenarios) >= 30
    assert len({s.model for s in scenarios}) >= 4
    assert sum(s.model == "llama-2-70b" for s in scenarios) >= 2
    assert {"paged_adamw_32bit", "paged_adamw_8bit", "adamw_torch", "adamw_8bit"} <= {s.optim for s in settings}
    assert {"sdpa", "eager"} <= {s.attn for s in settings}
    assert {True, False} <= {s.gradient_checkpointing for s in settings}
    assert {0.0, 0.05} <= {s.lora_dropout for s in settings}
    assert min(s.seq_len for s in settings) <= 256 and max(s.seq_len for s in settings) >= 8192
    assert min(s.batch for s in settings) == 1 and max(s.batch for s in settings) >= 8
    assert min(s.rank for s in settings) <= 8 and max(s.rank for s in settings) >= 128
    assert any(not s.prepare_kbit for s in settings) and any(not s.autocast for s in settings)
    manual = {(s.model, s.settings, s.steps) for s in scenarios if not s.trainer}
    twins = [s for s in scenarios if s.trainer]
    assert twins and all((s.model, s.settings, s.steps) in manual for s in twins)


def test_suite_errors_are_one_line(tmp_path):
    with pytest.raises(QPlanError, match="no suite"):
        load_suite("nonexistent-suite")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "scenarios": [{"name": "a", "model": "llama-2-7b", "settings": {"rank": 0}}]}))
    with pytest.raises(QPlanError, match="rank"):
        load_suite(bad)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"name": "x", "scenarios": [{"name": "a", "model": "llama-2-7b"}] * 2}))
    with pytest.raises(QPlanError, match="unique"):
        load_suite(twice)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"name": "x", "scenarios": [{"name": "a", "model": "no-such-model"}]}))
    with pytest.raises(QPlanError, match="no config.json"):
        load_suite(unknown)


def test_only_and_shards_partition_the_suite():
    scenarios = load_suite("core").scenarios
    shards = [select(scenarios, shard=f"{i}/3") for i in (1, 2, 3)]
    assert sorted(s.name for shard in shards for s in shard) == sorted(s.name for s in scenarios)
    assert [s.name for s in select(scenarios, only=[scenarios[3].name])] == [scenarios[3].name]
    with pytest.raises(QPlanError, match="no scenario named"):
        select(scenarios, only=["nope"])
    for bad in ("0/3", "4/3", "x", "1-3"):
        with pytest.raises(QPlanError):
            parse_shard(bad)


# ---- the CLI ----------------------------------------------------------------------------------------
def test_no_cuda_is_one_line_and_exit_2(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from planner.cli import main

    out = tmp_path / "m.jsonl"
    assert main(["measure", "--suite", "core", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA" in err[0]
    assert not out.exists()


def test_too_few_gpus_for_an_fsdp_scenario_is_one_line(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from planner.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "m.jsonl"
    assert main(["measure", "--suite", "fsdp-x2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 GPUs" in err[0] and "has 1" in err[0]
    assert not out.exists()


def test_existing_out_is_not_overwritten(tmp_path, capsys):
    from planner.cli import main

    out = tmp_path / "m.jsonl"
    out.write_text("mine\n")
    assert main(["measure", "--suite", "core", "--out", str(out)]) == 2
    assert "--append" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    assert main(["measure", "--suite", "core", "--model", "llama-2-7b", "--out", str(tmp_path / "x")]) == 2


# ---- the worker -------------------------------------------------------------------------------------
def test_worker_rejects_bad_arguments(capsys):
    from planner.measure.worker import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--scenario", '{"name": "a"}', "--result", "r.json"])
    assert exit_info.value.code == 2 and "not a valid Scenario" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--scenario", '{"name": "a", "model": "m"}'])
    args = parse_args(["--scenario", '{"name": "a", "model": "m", "steps": 2}', "--result", "r.json", "--device", "cpu"])
    assert args.scenario.steps == 2 and args.device == "cpu"


def _failing_run(monkeypatch, error, phase="backward"):
    pytest.importorskip("torch")
    from planner.measure import worker

    def run(self):
        self.tracker.enter("load")
        self.tracker.enter(phase)
        raise error

    monkeypatch.setattr(worker.Run, "run", run)
    return worker.measure(Scenario(name="s", model="llama-2-7b"), device="cpu")


def test_torch_oom_is_recorded_with_its_phase(monkeypatch):
    torch = pytest.importorskip("torch")
    result = _failing_run(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert (result.status, result.oom_phase) == ("oom", "backward")
    assert "Tried to allocate" in result.error


def test_cap_and_cublas_failures_count_as_oom_other_errors_do_not(monkeypatch):
    result = _failing_run(monkeypatch, caps.MemoryCapExceeded("over the cap"), phase="optimizer")
    assert (result.status, result.oom_phase) == ("oom", "optimizer")
    result = _failing_run(monkeypatch, RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert result.status == "oom"
    result = _failing_run(monkeypatch, ValueError("shapes do not match"), phase="forward")
    assert (result.status, result.oom_phase) == ("error", None)
    assert result.error == "ValueError: shapes do not match"
    result = _failing_run(monkeypatch, caps.PagedRefused("needs 9 B"), phase="optimizer")
    assert result.status == "error" and "PagedRefused" in result.error


def test_crashed_or_hung_worker_becomes_an_error_record(monkeypatch):
    from planner.measure import suite

    scenario = Scenario(name="s", model="llama-2-7b")
    monkeypatch.setattr(suite, "worker_command", lambda *a, **k: [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    result = measure_one(scenario)
    assert result.status == "error" and "code 3" in result.error and "boom" in result.error
    monkeypatch.setattr(suite, "worker_command", lambda *a, **k: [sys.executable, "-c", "import time; time.sleep(30)"])
    result = measure_one(scenario, timeout=1)
    assert result.status == "error" and "timed out" in result.error


def test_worker_runs_the_recipe_on_cpu(tiny, tmp_path):
    """The real worker process, start to finish, on a tiny Llama (plumbing only: no memory numbers on CPU).
    Its LoRA size must equal the planner's formula for the same config."""
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    from planner.inputs.architecture import from_config
    from planner.memory.trainable import trainable_params
    from planner.measure.suite import run_suite

    scenarios = [Scenario(name="manual", model=str(tiny), settings=TINY_SETTINGS, steps=2),
                 Scenario(name="trainer", model=str(tiny), settings={**TINY_SETTINGS, "optim": "adamw_torch"}, steps=2, trainer=True)]
    stream = tmp_path / "out.jsonl"
    results = run_suite(scenarios, stream, device="cpu", timeout=300)
    lines = [Measurement.model_validate_json(line) for line in stream.read_text().splitlines()]
    assert [m.scenario.name for m in lines] == ["manual", "trainer"]
    for m in results:
        assert m.status == "ok", m.error
        assert m.trainable_params == trainable_params(from_config(TINY), m.scenario.settings)
        assert m.provenance.torch and m.step_seconds > 0


# ---- the cap and the paged guard ------------------------------------------------------------------------
def test_paged_state_bytes_follow_bitsandbytes_rules():
    sizes = [99_999, 100_000, 4096 * 64]
    assert caps.paged_state_bytes("paged_adamw_32bit", sizes) == 8 * (100_000 + 4096 * 64)
    assert caps.paged_state_bytes("paged_adamw_8bit", sizes) == 2 * (100_000 + 4096 * 64)
    assert caps.paged_state_bytes("adamw_8bit", sizes) == 0
    assert caps.paged_state_bytes("adamw_torch", sizes) == 0


def test_paged_state_bytes_match_a_real_bitsandbytes_optimizer():
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (64, 100_000)]
    opt = bnb.optim.AdamW(params, optim_bits=32, is_paged=True)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.warns(UserWarning):  # on CPU paged buffers fall back to ordinary ones, same sizes
        opt.step()
    state = sum(opt.state[p][k].nbytes for p in params[1:] for k in ("state1", "state2"))
    assert caps.paged_state_bytes("paged_adamw_32bit", [p.numel() for p in params]) == state


def test_cap_fraction_and_checks():
    GiB = 2**30
    assert caps.allocator_fraction(24 * GiB, GiB // 2, GiB, 80 * GiB) == pytest.approx(22.5 / 80)
    with pytest.raises(caps.MemoryCapExceeded):
        caps.allocator_fraction(GiB, GiB, 0, 80 * GiB)
    caps.check_cap(24 * GiB, 30 * GiB, 7 * GiB)
    with pytest.raises(caps.MemoryCapExceeded):
        caps.check_cap(24 * GiB, 32 * GiB, 7 * GiB)
    caps.check_cap(None, 99 * GiB, 0)
    caps.check_paged(4 * GiB, 0, 5 * GiB)
    caps.check_paged(4 * GiB, 4 * GiB, 0)  # already placed: nothing new asked for
    with pytest.raises(caps.PagedRefused):
        caps.check_paged(4 * GiB, 0, 4 * GiB)


# ---- the builder against from_pretrained (CPU: tensors and attributes; GPU bytes: test_measure_gpu.py) ----
@pytest.mark.parametrize("overrides", [{}, {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "tie_word_embeddings": True}])
def test_built_model_has_from_pretrained_tensors_and_attributes(tmp_path, overrides):
    torch = pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    from transformers import AutoConfig, AutoModelForCausalLM

    from planner.measure.build import bnb_config, build_model
    from planner.measure.equality import SETTINGS, attributes, fingerprint

    checkpoint = tmp_path / "ckpt"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**TINY, **overrides}), dtype=torch.bfloat16).save_pretrained(checkpoint)
    loaded = AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=bnb_config(SETTINGS), device_map="cpu",
                                                  attn_implementation=SETTINGS.attn)
    built = build_model(checkpoint, SETTINGS, device="cpu")
    assert fingerprint(built) == fingerprint(loaded)
    assert attributes(built) == attributes(loaded)
    assert type(built.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    assert type(built.lm_head).__name__ == "Linear"


def test_stop_after_starts_nothing_once_the_time_is_up(tmp_path, monkeypatch):
    from planner.measure import suite

    calls = []
    monkeypatch.setattr(suite, "measure_one", lambda s, **k: calls.append(s) or Measurement(scenario=s, status="ok"))
    scenarios = [Scenario(name=n, model="llama-2-7b") for n in "abc"]
    assert [m.scenario.name for m in suite.run_suite(scenarios, tmp_path / "o.jsonl", stop_after=3600)] == ["a", "b", "c"]
    assert suite.run_suite(scenarios, tmp_path / "p.jsonl", stop_after=-1) == [] and len(calls) == 3


# ---- the committed device results -------------------------------------------------------------------------
def test_committed_measurements_are_complete_records():
    from planner.profiles import profiles_dir

    folder = profiles_dir() / "measurements"
    records = [Measurement.model_validate_json(line) for line in (folder / "core-h100.jsonl").read_text().splitlines()]
    suite = {s.name: s for s in load_suite("core").scenarios}
    assert len(records) >= 30
    for m in records:
        assert m.scenario == suite[m.scenario.name]  # measured exactly as the suite defines it
        assert m.status == ("oom" if m.scenario.name.endswith("-oom") else "ok")
        assert m.provenance.gpu_name.startswith("NVIDIA") and m.provenance.bitsandbytes and m.provenance.git_commit
        assert m.context_bytes > 0 and m.peak_device >= m.peak_reserved >= m.peak_allocated > 0
    equality = json.loads((folder / "equality-llama-3.2-1b.json").read_text())
    assert equality["all_equal"] and equality["tensors_compared"] > 100


def test_fsdp_worker_runs_two_ranks_on_cpu(tiny, tmp_path):
    """FSDP-QLoRA plumbing: two worker processes under torch.distributed.run (gloo), bf16 4-bit storage,
    LoRA in the model dtype, peft's wrap policy, the model staged in host memory before wrapping; the
    merged record is a finished run of the FSDP recipe. (CPU offload needs a GPU: the device runs cover it.)"""
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    from planner.inputs.architecture import from_config
    from planner.memory.parallel import fsdp_recipe
    from planner.memory.trainable import trainable_params
    from planner.measure.suite import measure_one

    settings = {**TINY_SETTINGS, "optim": "adamw_torch", "prepare_kbit": False, "adapter_fp32": False}
    scenario = Scenario(name="fsdp", model=str(tiny), settings=settings, steps=2, gpus=2)
    m = measure_one(scenario, device="cpu", timeout=300)
    assert m.status == "ok", m.error
    assert m.scenario.gpus == 2 and m.scenario.settings == fsdp_recipe(m.scenario.settings)
    assert m.trainable_params == trainable_params(from_config(TINY), m.scenario.settings)


def test_cpu_offload_needs_several_gpus():
    with pytest.raises(ValueError, match="gpus > 1"):
        Scenario(name="x", model="llama-2-7b", cpu_offload=True)
    assert Scenario(name="x", model="llama-2-7b", gpus=2, cpu_offload=True).cpu_offload


def test_timeline_windows_find_the_peak_and_what_is_alive_there():
    """planner.measure.timeline on a hand-made allocator trace: marks split it into windows, a repeated mark
    counts from its last position (a checkpointed layer's recompute), and the peak lists the live blocks."""
    from planner.measure.timeline import MARK_BASE, MARK_UNIT, Marks, window_peaks

    marks = Marks(torch=None)
    marks.names = ["forward", "layer0", "backward", "layer0", "end"]

    def mark(k):
        return {"action": "alloc", "addr": 1, "size": MARK_UNIT * (MARK_BASE + k), "frames": []}

    def alloc(addr, size, fn):
        return {"action": "alloc", "addr": addr, "size": size, "frames": [{"filename": f"/x/m/{fn}.py", "line": 1, "name": fn}]}

    def free(addr, size):
        return {"action": "free_completed", "addr": addr, "size": size}

    trace = [mark(0), alloc(10, 4096, "a"), mark(1), alloc(11, 8192, "b"), free(11, 8192), mark(2),
             alloc(12, 2048, "c"), mark(3), alloc(13, 1024, "d"), alloc(14, 1024, "d"), free(12, 2048), mark(4)]
    report = window_peaks(trace, marks, {"forward": ("forward", "backward"), "layer0": ("layer0", "end")})
    assert report["forward"]["peak_above_step_start"] == 4096 + 8192
    assert report["forward"]["alive_at_peak"] == [[8192, 1, "m/b.py:1:b"], [4096, 1, "m/a.py:1:a"]]
    assert report["layer0"]["peak_above_step_start"] == 4096 + 2048 + 2048
    assert [1024, 2, "m/d.py:1:d"] in report["layer0"]["alive_at_peak"]


@pytest.mark.parametrize("tool", ["saved", "timeline", "paged", "equality"])
def test_gpu_tools_without_their_argument_or_a_gpu_are_one_line(tool):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import subprocess

    for args in ([], ["/tmp/qplan-tool-out.json"]):
        result = subprocess.run([sys.executable, "-m", f"planner.measure.{tool}", *args], capture_output=True, text=True,
                                timeout=120)
        err = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(err) == 1 and "Traceback" not in result.stderr
        assert ("usage:" in err[0]) if not args and tool != "equality" else ("CUDA" in err[0])
