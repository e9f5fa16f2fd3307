"""Allocator histories (planner.measure.history) on the CPU: the option reaches the worker, harness calls are
placed in a synthetic trace, the trace replays to its peaks, and dump writes a snapshot and a valid sidecar."""

import gzip
import pickle
import types
from pathlib import Path

import pytest

from planner.measure import history
from planner.measure.suite import worker_command
from planner.results import Measurement, Scenario

TRACE = [  # two allocations in one segment, a free, a phase reset, an empty_cache
    {"action": "segment_alloc", "size": 2 << 20}, {"action": "alloc", "size": 512}, {"action": "alloc", "size": 1000},
    {"action": "free_requested", "size": 512}, {"action": "free_completed", "size": 512},
    {"action": "segment_free", "size": 2 << 20},
]


def test_the_option_reaches_the_worker(tmp_path):
    from planner.measure.worker import parse_args

    scenario = Scenario(name="a", model="llama-2-7b")
    command = worker_command(scenario, tmp_path / "r.json", "cpu", tmp_path)
    assert command[-2:] == ["--history", str(tmp_path / "a.pickle.gz")]
    assert "--history" not in worker_command(scenario, tmp_path / "r.json", "cpu")
    args = parse_args(["--scenario", scenario.model_dump_json(), "--result", "r.json", "--history", command[-1]])
    assert args.history == command[-1]
    with pytest.raises(SystemExit):
        parse_args(["--scenario", '{"name": "a", "model": "m", "gpus": 2}', "--result", "r", "--history", "h"])


def test_calls_are_placed_and_the_trace_replays():
    calls = [history.HarnessCall(call="reset_peak_memory_stats", allocs_before=0, frees_before=0, time_us=0, caller=""),
             history.HarnessCall(call="reset_peak_memory_stats", allocs_before=2, frees_before=1, time_us=0, caller=""),
             history.HarnessCall(call="empty_cache", allocs_before=2, frees_before=1, time_us=0, caller="")]
    history.place(TRACE, calls)
    assert [c.events_before for c in calls] == [0, 5, 5]
    assert history.replay_peaks(TRACE) == (1512, 2 << 20)


def _fake_torch(snapshot_trace):
    stats = {"allocation.all.allocated": 0, "allocation.all.freed": 0, "allocated_bytes.all.peak": 7,
             "reserved_bytes.all.peak": 9, "requested_bytes.all.peak": 5, "num_alloc_retries": 0, "num_ooms": 0}
    memory = types.SimpleNamespace(
        _record_memory_history=lambda *a, **k: None,
        _dump_snapshot=lambda path: Path(path).write_bytes(pickle.dumps({"device_traces": [snapshot_trace]})),
        empty_cache=lambda: None, reset_peak_memory_stats=lambda *a: stats.update({"allocated_bytes.all.peak": 3}),
        set_per_process_memory_fraction=lambda *a: None)
    cuda = types.SimpleNamespace(memory=memory, memory_stats=lambda: dict(stats), current_device=lambda: 0,
                                 get_device_properties=lambda d: types.SimpleNamespace(total_memory=100),
                                 get_device_name=lambda d: "fake")
    return types.SimpleNamespace(cuda=cuda, __version__="0"), stats


def test_dump_writes_the_snapshot_and_its_sidecar(tmp_path):
    torch, stats = _fake_torch(TRACE)
    recorder = history.start(torch, tmp_path / "s.pickle.gz")
    torch.cuda.reset_peak_memory_stats()  # the tracker's call, through the wrapper
    stats.update({"allocation.all.allocated": 2, "allocation.all.freed": 1})
    torch.cuda.empty_cache()
    scenario = Scenario(name="s", model="llama-2-7b")
    sidecar = recorder.dump(Measurement(scenario=scenario, status="ok", peak_allocated=7, peak_reserved=9))
    assert pickle.loads(gzip.decompress((tmp_path / "s.pickle.gz").read_bytes()))["device_traces"][0] == TRACE
    again = history.HistorySidecar.model_validate_json((tmp_path / "s.json").read_text())
    assert again == sidecar and not list(tmp_path.glob("*.part"))
    assert (sidecar.max_memory_allocated, sidecar.max_memory_reserved, sidecar.events) == (7, 9, 6)
    assert [c.events_before for c in sidecar.harness_calls] == [0, 5] and sidecar.empty_cache_calls == 1
    assert sidecar.memory_fraction is None and sidecar.trace_peak_requested == 1512
