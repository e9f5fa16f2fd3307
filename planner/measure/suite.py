"""Suites of scenarios: loading (``profiles/suites/<name>.json`` or a path), choosing (``--only``,
``--shard i/n``) and running them, each scenario in a fresh ``python -m planner.measure.worker`` process,
each result appended to a JSON-lines file the moment it exists. No torch in this process: the CUDA context
of the parent would otherwise sit on the GPU beside every measured process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from ..errors import QPlanError
from ..profiles import profiles_dir
from ..results import Measurement, Scenario, Suite
from ..settings import ALLOC_CONF, EXPANDABLE
from . import fsdp
from .configs import config_dir

TIMEOUT_S = 900


def alloc_env(settings) -> dict[str, str]:
    """The worker's allocator setting: expandable segments when the scenario asks for them (recorded in the
    measurement's ``provenance.alloc_conf``)."""
    return {ALLOC_CONF: EXPANDABLE} if settings.expandable_segments else {}


def load_suite(spec: str | Path) -> Suite:
    """A suite file path, or the name of one under ``profiles/suites/``; every model must have a config."""
    path = Path(spec)
    if not path.is_file():
        named = profiles_dir() / "suites" / f"{spec}.json"
        if not named.is_file():
            known = sorted(p.stem for p in (profiles_dir() / "suites").glob("*.json"))
            raise QPlanError(f"no suite {spec!r}: give a suite file or one of {', '.join(known) or 'none'}")
        path = named
    try:
        suite = Suite.model_validate_json(path.read_text())
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise QPlanError(f"{path}: {where}: {first['msg']} ({err.error_count()} problems)") from None
    names = [s.name for s in suite.scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise QPlanError(f"{path}: scenario names must be unique, repeated: {', '.join(duplicates)}")
    for scenario in suite.scenarios:
        config_dir(scenario.model)
    return suite


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3): the second of three round-robin shards."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise QPlanError(f"--shard {text!r}: write it as i/n, e.g. 1/3") from None
    if not 1 <= index <= count:
        raise QPlanError(f"--shard {text!r}: need 1 <= i <= n")
    return index, count


def select(scenarios: list[Scenario], only: list[str] | None = None, shard: str | None = None) -> list[Scenario]:
    """Scenarios named by ``only`` (all when empty), then every n-th from the i-th (``shard="i/n"``)."""
    if only:
        known = {s.name for s in scenarios}
        unknown = [name for name in only if name not in known]
        if unknown:
            raise QPlanError(f"--only: no scenario named {', '.join(unknown)} in the suite")
        scenarios = [s for s in scenarios if s.name in set(only)]
    if shard:
        index, count = parse_shard(shard)
        scenarios = scenarios[index - 1::count]
    return scenarios


def history_file(history_dir: str | Path, scenario: Scenario) -> Path:
    """Where a scenario's allocator history goes (planner.measure.history): ``DIR/<scenario>.pickle.gz``."""
    return Path(history_dir) / f"{scenario.name}.pickle.gz"


def worker_command(scenario: Scenario, result: Path, device: str = "cuda", history_dir: str | Path | None = None) -> list[str]:
    if scenario.gpus > 1:
        if history_dir:
            raise QPlanError(f"{scenario.name}: allocator histories are recorded on one GPU only (gpus > 1)")
        return fsdp.launch_command(scenario, result, device)
    history = ["--history", str(history_file(history_dir, scenario))] if history_dir else []
    return [sys.executable, "-m", "planner.measure.worker", "--scenario", scenario.model_dump_json(),
            "--result", str(result), "--device", device, *history]


def measure_one(scenario: Scenario, *, timeout: float = TIMEOUT_S, device: str = "cuda", log: Path | None = None,
                history_dir: str | Path | None = None) -> Measurement:
    """Run the worker for one scenario; a crash or timeout becomes a ``status="error"`` record. With
    ``history_dir``, the worker also records its allocator history there (planner.measure.history)."""
    with tempfile.TemporaryDirectory(prefix="qplan-measure-") as tmp:
        result = Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.txt"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **alloc_env(scenario.settings)}
        with stderr_path.open("w") as stderr:
            try:
                code = subprocess.run(worker_command(scenario, result, device, history_dir), stdout=stderr, stderr=stderr,
                                      timeout=timeout, env=env).returncode
                problem = None if code == 0 else f"worker exited with code {code}"
            except subprocess.TimeoutExpired:
                problem = f"worker timed out after {timeout:.0f} s"
        text = stderr_path.read_text(errors="replace")
        if log is not None:
            with log.open("a") as handle:
                handle.write(f"===== {scenario.name}\n{text}\n")
        if scenario.gpus > 1:
            merged = fsdp.merge(scenario, result)
            if merged is not None:
                return merged
        elif result.is_file():
            return Measurement.model_validate_json(result.read_text())
    tail = text.strip().splitlines()[-5:]
    return Measurement(scenario=scenario, status="error", error=f"{problem}: {' | '.join(tail)}"[:2000])


def run_suite(suite: Suite | list[Scenario], stream: str | Path, *, on_result: Callable[[Measurement], None] | None = None,
              timeout: float = TIMEOUT_S, device: str = "cuda", log: str | Path | None = None,
              stop_after: float | None = None, history_dir: str | Path | None = None) -> list[Measurement]:
    """Measure every scenario in turn, appending each Measurement as one JSON line to ``stream`` (flushed
    and synced) before the next starts. With ``stop_after`` (seconds), no scenario is started once that
    much time has passed; the ones left are not recorded (run them later with ``--only``/``--append``)."""
    scenarios = suite.scenarios if isinstance(suite, Suite) else suite
    stream, log = Path(stream), Path(log) if log else None
    stream.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = []
    for scenario in scenarios:
        if stop_after is not None and time.monotonic() - started > stop_after:
            break
        measurement = measure_one(scenario, timeout=timeout, device=device, log=log, history_dir=history_dir)
        with stream.open("a") as handle:
            handle.write(measurement.model_dump_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        results.append(measurement)
        if on_result:
            on_result(measurement)
    return results

