"""Measure a suite on this machine's GPU into one results file, with a progress bar.

The measuring itself is ``qplan measure``'s harness, imported only here (it brings torch)::

    planner.measure.suite.run_suite(suite, stream_path, on_result=callback[, script=path]) -> list[Measurement]

which runs each scenario in a fresh process, appends each :class:`~planner.results.Measurement` to the
JSON-lines file ``stream_path`` as it finishes and calls ``on_result`` with it. The stream is kept next to
the output (``NAME.json.partial.jsonl``) while the suite runs and removed once the results file is written,
so a crash loses nothing: the partial stream is itself a readable results file.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import QPlanError
from ..results import Measurement, Suite
from ..units import fmt_gib
from .resultfile import ResultsFile, ScriptInfo, common_environment, git_state, refuse_overwrite, run_info


def stream_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _line(m: Measurement) -> str:
    peak = fmt_gib(m.peak_device) + " device" if m.peak_device is not None else (
        fmt_gib(m.peak_reserved) + " reserved" if m.peak_reserved is not None else "no peak recorded")
    style = {"ok": "green", "oom": "yellow", "error": "red"}[m.status]
    detail = f" ({m.error})" if m.status == "error" and m.error else f" in {m.oom_phase}" if m.oom_phase else ""
    return f"[{style}]{m.status}[/] {m.scenario.name}: {peak}{detail}"


def measure_suite(suite: Suite, out: Path, *, script: Path | None = None, force: bool = False,
                  console: Console | None = None) -> ResultsFile:
    """Run every scenario of ``suite`` through the measuring harness and return the results file
    (not yet written: see :func:`~.resultfile.write_results`)."""
    try:
        from ..measure.suite import run_suite
    except ImportError as err:
        raise QPlanError(f"the measuring harness is not available ({err}); install qplan[gpu]") from None
    if script is not None and not script.is_file():
        raise QPlanError(f"--script {script}: no such file")
    stream = stream_path(out)
    refuse_overwrite(stream, force)
    stream.unlink(missing_ok=True)
    stream.parent.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"measuring {suite.name}", total=len(suite.scenarios))

        def on_result(m: Measurement) -> None:
            progress.console.print(_line(m))
            progress.advance(task)

        measurements = run_suite(suite, stream, on_result=on_result, **({"script": script} if script else {}))
    if not measurements:
        raise QPlanError(f"suite {suite.name!r} produced no measurements (stream kept in {stream})")
    info = run_info(
        "measurement", suite.name, environment=common_environment(measurements, f"suite {suite.name!r}"),
        script=ScriptInfo(path=str(script), git=git_state(script)) if script else None,
    )
    return ResultsFile(provenance=info, measurements=measurements)
