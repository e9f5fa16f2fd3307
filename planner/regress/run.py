"""Measure a suite on this machine's GPU into one results file, with a progress bar.

The measuring itself is ``qplan measure``'s harness::

    planner.measure.suite.run_suite(suite, stream_path, on_result=callback, timeout=..., log=...) -> list[Measurement]

which runs each scenario in a fresh worker process (torch lives only there), appends each
:class:`~planner.results.Measurement` to the JSON-lines file ``stream_path`` as it finishes and calls
``on_result`` with it. The stream sits next to the output (``NAME.json.partial.jsonl``) while the suite
runs and is removed once the results file is written, so a crash loses nothing: the partial stream is
itself a file ``qplan regress compare`` reads.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from planner.errors import QPlanError
from planner.files import check_output
from planner.results import Measurement, Suite
from planner.results import ResultsFile, ScriptInfo, common_environment, git_state, run_info


def stream_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def measure_suite(suite: Suite, out: Path, *, script: Path | None = None, force: bool = False,
                  timeout: float | None = None, log: Path | None = None, console: Console | None = None) -> ResultsFile:
    """Run every scenario of ``suite`` through the measuring harness and return the results file
    (not yet written: see :func:`~planner.results.write_results`). ``script`` is only recorded (path and git
    commit): the harness runs its own recipe, ``planner/measure/recipe.py``."""
    from planner.measure.cuda import require_cuda
    from planner.measure.suite import TIMEOUT_S, run_suite, summary

    if script is not None and not script.is_file():
        raise QPlanError(f"--script {script}: no such file")
    require_cuda(max((s.gpus for s in suite.scenarios), default=1))
    stream = stream_path(out)
    check_output(stream, force=force)
    stream.unlink(missing_ok=True)
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"measuring {suite.name}", total=len(suite.scenarios))

        def on_result(m: Measurement) -> None:
            progress.console.print(summary(m))
            progress.advance(task)

        measurements = run_suite(suite, stream, on_result=on_result, timeout=timeout or TIMEOUT_S, log=log)
    if not measurements:
        raise QPlanError(f"suite {suite.name!r} has no scenarios")
    info = run_info(
        "measurement", suite.name, environment=common_environment(measurements, f"suite {suite.name!r}"),
        script=ScriptInfo(path=str(script), git=git_state(script)) if script else None,
    )
    return ResultsFile(provenance=info, measurements=measurements)
