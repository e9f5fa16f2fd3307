"""planner.trace on the CPU: free detection on known lifetimes, a two-layer model end to end against an
independent count of live storages, extension from 2 and 3 layers against the full trace, the one-line
TraceUnavailable path, and no torch on import.

The fake CUDA device a trace installs only works in a process whose autograd engine has not run (other test
files run backward passes in this pytest process), so the tests that trace in-process run in a fresh pytest
process of this file (``test_the_in_process_cases_pass_in_a_fresh_process``); ``trace_step`` itself always
traces in a child process, which is checked here from a process that has run autograd."""

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from planner.inputs.settings import TrainSettings  # noqa: E402
from planner.trace import TraceUnavailable, trace_in_this_process, trace_step  # noqa: E402
from planner.trace.cuda import install_fake_cuda  # noqa: E402
from planner.trace.extrapolate import extrapolate, summary, tokens  # noqa: E402
from planner.trace.recorder import Recorder, rounded  # noqa: E402

TINY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 176,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
# more than 512 tokens: bitsandbytes dequantizes on sm90 (its fused-kernel choice below that is a per-shape table)
TINY_SETTINGS = TrainSettings(seq_len=640, batch=1, grad_accum=2, rank=8)


FRESH = "QPLAN_TRACE_TESTS_FRESH"  # set in the fresh process that runs the in-process cases


@pytest.fixture(scope="module")
def fake_cuda():
    if os.environ.get(FRESH) != "1":
        pytest.skip("traces in-process: run by test_the_in_process_cases_pass_in_a_fresh_process")
    try:
        install_fake_cuda()
    except TraceUnavailable as error:
        pytest.skip(str(error))


def test_the_in_process_cases_pass_in_a_fresh_process():
    if os.environ.get(FRESH) == "1":
        pytest.skip("this is the fresh process")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env={**os.environ, FRESH: "1"}, capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).parents[1])
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0 and " passed" in last and "failed" not in last, done.stdout[-4000:]


def test_trace_step_runs_in_a_child_from_a_process_that_ran_autograd():
    if os.environ.get(FRESH) == "1":
        pytest.skip("runs autograd in this process, which the in-process cases must not share")
    import torch

    weight = torch.ones(3, requires_grad=True)
    (weight * 2).sum().backward()  # this process's autograd engine is started without a CUDA device
    trace = trace_step(TINY, TINY_SETTINGS.model_copy(update={"grad_accum": 1}), steps=1)
    assert trace.traced == "full" and trace.allocated_peak_bytes > 0 and trace.events


def _record(body):
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    recorder = Recorder({})
    with FakeTensorMode(), recorder:
        body(torch)
    return [(e["action"], e["size"]) for e in recorder.events if e["action"] != "free_requested"], recorder


def test_frees_follow_known_lifetimes(fake_cuda):
    """Views share one block; a temporary dies at once; an output that autograd saves in C++ lives until
    backward uses it, then dies there, on the engine's device thread."""

    def body(torch):
        x = torch.empty(256, device="cuda", requires_grad=True)  # 1024 B
        view = x.view(16, 16)
        doubled = x * 2  # 1024 B, saved by nothing: sigmoid saves its output
        y = doubled.sigmoid()  # 1024 B, saved for backward
        del doubled
        total = y.sum()  # 4 B
        del y, view
        total.backward()  # ones_like seed (4 B), sigmoid_backward (1024 B), mul backward (1024 B, the grad)
        del total

    events, recorder = _record(body)
    assert events == [
        ("alloc", 1024), ("alloc", 1024), ("alloc", 1024), ("free_completed", 1024),  # x, x*2, y; x*2 dies at once
        ("alloc", 4),  # the sum
        ("alloc", 4), ("alloc", 1024), ("free_completed", 1024),  # backward: seed, sigmoid_backward; the saved y dies
        ("alloc", 1024), ("free_completed", 1024), ("free_completed", 4), ("free_completed", 4),  # x's grad; temporaries
        ("free_completed", 1024), ("free_completed", 1024),  # body returns: x.grad, then x
    ]
    assert recorder.peak == 1024 + 4 + 4 + 1024 + 1024  # x, sum, seed, sigmoid_backward and x's grad (or y)
    assert recorder.peak_rounded == 3 * 1024 + 2 * 512


def test_two_layers_end_to_end_match_an_independent_count(fake_cuda, monkeypatch):
    """A two-layer Llama through load, adapter and two steps: the recorder's peak equals a plain count of the
    bytes of every CUDA storage still alive after each op (weak references polled, no finalizers)."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef

    from planner.trace import recorder as recorder_module

    counted = {"live": {}, "peak": 0, "workspaces": 0, "scanned": 0}
    real_dispatch = recorder_module.Recorder.__torch_dispatch__

    def dispatch(self, func, types, args=(), kwargs=None):
        out = real_dispatch(self, func, types, args, kwargs)
        live = counted["live"]
        for leaf in torch.utils._pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cuda" and leaf.untyped_storage().nbytes():
                storage = leaf.untyped_storage()
                live.setdefault(storage._cdata, (StorageWeakRef(storage), rounded(storage.nbytes())))
        for key in [key for key, (ref, _) in live.items() if ref.expired()]:
            del live[key]
        new_events, counted["scanned"] = self.events[counted["scanned"]:], len(self.events)
        counted["workspaces"] += sum(e["size"] for e in new_events if e.get("op") == "cublas_workspace")  # no tensor shows them
        counted["peak"] = max(counted["peak"], sum(size for _, size in live.values()) + counted["workspaces"])
        return out

    monkeypatch.setattr(recorder_module.Recorder, "__torch_dispatch__", dispatch)
    trace = trace_in_this_process(TINY, TINY_SETTINGS, steps=2, full=True)
    assert trace.traced == "full"
    assert [p["name"] for p in trace.phases] == ["load", "adapter"] + ["forward", "backward"] * 2 + ["optimizer"] + \
        ["forward", "backward"] * 2 + ["optimizer"]
    assert trace.allocated_peak_bytes == counted["peak"] > 0
    assert trace.paged_bytes == 0  # every LoRA tensor here is under bitsandbytes' 1e5-element paging threshold
    assert sum(1 for e in trace.events if e.get("op") == "cublas_workspace") == 2  # main thread and autograd's device thread


def test_extension_from_two_and_three_layers_equals_the_full_trace(fake_cuda):
    """Six layers and four micro-batches, traced in full and extended from 2/3 layers x 2/3 micro-batches: the
    token streams (every request's size and op, in order) are equal, so are the peaks and request counts."""
    config = dict(TINY, num_hidden_layers=6)
    settings = TINY_SETTINGS.model_copy(update={"grad_accum": 4})
    full = trace_in_this_process(config, settings, steps=2, full=True)
    extended = trace_in_this_process(config, settings, steps=2)
    assert extended.traced.startswith("extended") and not extended.events
    assert (extended.allocated_peak_bytes, extended.allocated_peak_unrounded_bytes, extended.requests) == \
        (full.allocated_peak_bytes, full.allocated_peak_unrounded_bytes, full.requests)
    assert [(p["name"], p["peak_rounded"]) for p in extended.phases] == [(p["name"], p["peak_rounded"]) for p in full.phases]


def test_extension_rebuilds_the_token_stream(fake_cuda):
    from planner.trace.run import run

    streams = {n: run(dict(TINY, num_hidden_layers=n), TINY_SETTINGS, 1) for n in (2, 3, 5)}
    short, long, five = (tokens(r.events, r.phases) for r in streams.values())
    assert extrapolate(short, long, 3) == five
    assert summary(five)["allocated_peak_bytes"] == streams[5].peak_rounded


def test_an_untraceable_setup_raises_one_line(fake_cuda):
    with pytest.raises(TraceUnavailable) as error:
        trace_in_this_process(TINY, TINY_SETTINGS.model_copy(update={"seq_len": 100}), steps=1)
    assert "\n" not in str(error.value) and "4-bit GEMM" in str(error.value)


def test_a_failing_op_comes_out_as_one_line(fake_cuda, monkeypatch):
    """An op that cannot run on fake tensors (here: the data-dependent ``.item()``) ends the trace with one
    TraceUnavailable, not a traceback."""
    from planner.trace import step

    def item_in_forward(model, optimizer, settings, recorder, steps, micro_batches=None):
        import torch

        torch.ones(4, device="cuda").sum().item()

    monkeypatch.setattr(step, "train", item_in_forward)
    with pytest.raises(TraceUnavailable) as error:
        trace_in_this_process(TINY, TINY_SETTINGS, steps=1, full=True)
    assert "\n" not in str(error.value) and "DataDependentOutputException" in str(error.value)


def test_cli_prints_one_line_on_failure_and_the_peak_on_success(fake_cuda, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_hidden_layers": 2}))
    run = subprocess.run([sys.executable, "-m", "planner.trace", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "model_type" in run.stderr
    good = tmp_path / "tiny.json"
    good.write_text(json.dumps(TINY))
    events = tmp_path / "events.json.gz"
    run = subprocess.run([sys.executable, "-m", "planner.trace", str(good), "--seq-len", "640", "--grad-accum", "1",
                          "--rank", "8", "--steps", "1", "--json", "--events-out", str(events)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    summary_json = json.loads(run.stdout)
    assert summary_json["traced"] == "full" and summary_json["allocated_peak_bytes"] > 0
    import gzip

    stream = json.load(gzip.open(events))
    assert sum(1 for e in stream if e["action"] == "alloc") == summary_json["requests"]


def test_compare_finds_where_a_history_parts(fake_cuda, tmp_path):
    """A history made of the trace's own events compares equal; one with an extra large request parts there."""
    import gzip
    import pickle

    from planner.trace.compare import compare

    trace = trace_in_this_process(TINY, TINY_SETTINGS.model_copy(update={"grad_accum": 1}), steps=1)
    history = [dict(e, time_us=0, frames=[]) for e in trace.events]
    same, parted = tmp_path / "same.pickle.gz", tmp_path / "parted.pickle.gz"
    pickle.dump({"device_traces": [history]}, gzip.open(same, "wb"))
    first_large = next(i for i, e in enumerate(history) if e["action"] == "alloc" and e["size"] >= 1 << 20)
    extra = [{"action": "alloc", "addr": -1, "size": 3 << 20, "stream": 0}, {"action": "free_completed", "addr": -1, "size": 3 << 20, "stream": 0}]
    pickle.dump({"device_traces": [history[:first_large + 1] + extra + history[first_large + 1:]]}, gzip.open(parted, "wb"))
    result = compare(trace.stream, same)
    assert (result["peak_difference"], result["large_order_parts_at"]) == (0, None)
    assert result["allocated_peak_trace"] == trace.allocated_peak_bytes
    result = compare(trace.stream, parted)
    assert result["large_order_parts_at"] == 1 and result["large_only_in_history"] == [(3 << 20, 1)]


def test_planner_trace_imports_no_torch():
    code = "import sys, planner.trace; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_weakref_finalize_fires_for_storages_held_only_by_cpp(fake_cuda):
    """The premise of the recorder: a storage's Python object lives as long as its StorageImpl."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    died = []
    with FakeTensorMode():
        x = torch.empty(64, device="cuda", requires_grad=True)
        y = x.exp()  # exp saves its output
        weakref.finalize(y.untyped_storage(), died.append, "y")
        loss = y.sum()
        del y
        assert died == []
        loss.backward()
        del loss
    assert died == ["y"]


def test_a_traced_plan_has_the_json_contract_and_its_method(capsys):
    """``qplan --trace`` on a two-layer model: the plan says it was traced, its breakdown sums to its peak,
    and its allocated peak is the trace's own."""
    if os.environ.get(FRESH) == "1":
        pytest.skip("runs in the parent process (the trace runs in its own child)")
    from planner.inputs.architecture import from_config
    from planner.inputs.gpus import resolve_gpu
    from planner.pricing.price import PlanRequest, price
    from planner.trace.estimate import verifier

    settings = TINY_SETTINGS.model_copy(update={"grad_accum": 1})
    request = PlanRequest(arch=from_config(TINY, name="tiny"), gpu=resolve_gpu("24GB"), settings=settings,
                          fixed={"rank", "seq_len", "batch", "grad_accum", "optim", "gradient_checkpointing"},
                          verify=verifier)
    plan = price(request).plan
    assert plan.method == "traced"
    assert sum(plan.breakdown.values()) == plan.peak_bytes
    assert plan.allocated_peak_bytes == trace_step(TINY, settings).allocated_peak_bytes
    assert plan.reserved_peak_bytes >= plan.allocated_peak_bytes


def test_stream_pairing_gives_the_full_traces_simulated_peaks():
    """Frees paired last-in first-out by (size, op) (planner.trace.stream) replay to the same allocator peaks
    as the full trace's own addresses."""
    if os.environ.get(FRESH) == "1":
        pytest.skip("runs in the parent process")
    from planner.allocator import AllocatorConfig, simulate
    from planner.trace.stream import events

    trace = trace_step(TINY, TINY_SETTINGS, steps=2, full=True)
    for conf in (None, "expandable_segments:True"):
        config = AllocatorConfig.from_conf(conf)
        own, paired = simulate(trace.events, config), simulate(events(trace.stream), config)
        assert (paired.reserved_peak_bytes, paired.allocated_peak_bytes) == (own.reserved_peak_bytes, own.allocated_peak_bytes)
        assert paired.unknown_frees == 0
