"""One scenario in a fresh process: ``python -m planner.measure.worker --scenario JSON --result PATH``.

The process reads NVML before it touches CUDA (the baseline), initialises CUDA and reads again (the
context), then runs the phases load -> adapter -> (forward -> backward)* -> optimizer, each with fresh
allocator peaks. An out-of-memory error (torch's, cuBLAS's allocation failure, or ``--memory-cap``
exceeded outside the allocator) ends the run as ``status="oom"`` with the phase it happened in; any other
failure as ``status="error"``. The Measurement is written to ``--result`` in every case; the exit code is
0 once it is written, 2 for bad arguments. ``--device cpu`` runs the plumbing without a GPU (no memory
numbers). ``--history PATH`` also records the caching allocator's whole history into PATH and a sidecar
(:mod:`planner.measure.history`; one GPU only). A scenario with ``gpus > 1`` runs under
``torch.distributed.run`` with FSDP (see :mod:`planner.measure.fsdp`): each rank writes ``RESULT.rank<r>``
and exits 3 when its run failed, so the launcher stops the other ranks instead of leaving them in a
collective."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

from ..results import Measurement, Scenario
from . import cap as caps
from . import fsdp, history
from .configs import config_dir
from .nvml import Nvml, PeakPoller
from .tracker import PhaseTracker

OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "cudaErrorMemoryAllocation")


def is_oom(err: BaseException) -> bool:
    if isinstance(err, caps.MemoryCapExceeded):
        return True
    name = type(err).__name__
    return name == "OutOfMemoryError" or (isinstance(err, RuntimeError) and any(m in str(err) for m in OOM_MARKERS))


def log(message: str) -> None:
    print(f"[worker {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Run:
    """State of one measurement while it runs, so a failure can still report what was reached."""

    def __init__(self, scenario: Scenario, device: str, history_path: str | None = None):
        self.scenario, self.device_kind, self.history_path = scenario, device, history_path
        self.recorder = None
        self.record: dict = {"scenario": scenario}
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.distributed = scenario.gpus > 1
        self.nvml = Nvml(self.local_rank)
        self.baseline = self.nvml.used() if device == "cuda" else None
        self.paged_expected = 0

    def setup(self):
        import torch

        self.torch = torch
        if self.device_kind == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device visible to the worker")
            torch.cuda.set_device(self.local_rank)
            torch.cuda.init()
            self.recorder = history.start(torch, self.history_path)  # before the first CUDA allocation
            torch.empty(1, device="cuda")
            torch.cuda.synchronize()
            used = self.nvml.used()
            if used is not None and self.baseline is not None:
                self.record["context_bytes"] = used - self.baseline - torch.cuda.memory_reserved()
            self.record["baseline_device"] = self.baseline
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        if self.distributed:
            torch.distributed.init_process_group("nccl" if self.device_kind == "cuda" else "gloo",
                                                 timeout=timedelta(seconds=120))
        self.poller = PeakPoller(self.nvml)
        if self.device_kind == "cuda":
            self.poller.start()
        self.tracker = PhaseTracker(  # FSDP: the cap applies once the model is sharded (self.shard)
            torch, self.nvml, self.poller, baseline=self.baseline,
            cap=None if self.distributed else self.scenario.memory_cap_bytes, cuda=self.device_kind == "cuda",
        )
        if not self.distributed:
            self.apply_cap()

    def apply_cap(self) -> None:
        """Hold torch's reserved memory to cap - context - paged state (see planner.measure.cap)."""
        cap = self.scenario.memory_cap_bytes
        if cap is None or self.device_kind != "cuda":
            return
        total = self.torch.cuda.get_device_properties(self.device).total_memory
        fraction = caps.allocator_fraction(cap, self.record.get("context_bytes") or 0, self.paged_expected, total)
        self.torch.cuda.set_per_process_memory_fraction(fraction, self.device)

    def guard(self, optimizer) -> None:
        """Before an optimizer step: refuse managed memory the device cannot hold (planner.measure.cap)."""
        if self.device_kind != "cuda" or not self.paged_expected:
            return
        placed = sum(t.nbytes for t in _paged_tensors())
        caps.check_paged(self.paged_expected, placed, self.torch.cuda.mem_get_info(self.device)[0])

    def run(self) -> None:
        from ..memory.parallel import fsdp_recipe
        from .build import build_model
        from .recipe import attach_adapter, run_manual, run_trainer

        s = self.scenario.settings
        self.tracker.enter("load")
        if self.distributed:
            s = fsdp_recipe(s)
            self.record["scenario"] = self.scenario.model_copy(update={"settings": s})
            model = build_model(config_dir(self.scenario.model), s, self.device.type, dtype=self.torch.bfloat16,
                                quant_storage=self.torch.bfloat16, materialize=False, log=log)
        else:
            model = build_model(config_dir(self.scenario.model), s, self.device.type, log=log)
        log("model built")
        self.tracker.enter("adapter")
        model = attach_adapter(model, s)
        if self.distributed:  # still on meta: peft's count would read 4-bit weights at full size
            self.record["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            model = self.shard(model)
        else:
            trainable, total = model.get_nb_trainable_parameters()
            self.record.update(trainable_params=int(trainable), total_params=int(total))
        numels = [p.numel() for p in model.parameters() if p.requires_grad]
        self.paged_expected = caps.paged_state_bytes(s.optim, numels)
        self.apply_cap()
        log(f"adapter attached: {self.record['trainable_params']} trainable; paged state expected {self.paged_expected} B")
        loop = run_trainer if self.scenario.trainer else run_manual
        self.record["step_seconds"] = loop(model, s, self.scenario.steps, self.tracker, self.device, self.guard)
        self.tracker.close()
        self.record["status"] = "ok"

    def shard(self, model):
        """Stage the meta model in host memory, FSDP-wrap it, then start the records over (planner.measure.fsdp)."""
        fsdp.stage_on_cpu(model, self.device, self.torch.bfloat16, log=log)
        model = fsdp.wrap(model, self.device, self.scenario.cpu_offload)
        self.tracker.current = None
        self.tracker.phases.clear()
        self.tracker.cap = self.scenario.memory_cap_bytes
        if self.device_kind == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.poller.peak = None
        self.tracker.enter("adapter")
        log(f"sharded over {self.scenario.gpus} ranks")
        return model

    def fail(self, err: BaseException) -> None:
        phase = self.tracker.current if hasattr(self, "tracker") else None
        if phase is not None:
            try:
                self.tracker.record(phase)
            except Exception:  # a sticky CUDA error: keep what was recorded before
                pass
        message = f"{type(err).__name__}: {err}".strip()
        self.record["error"] = message[:2000]
        if is_oom(err):
            self.record.update(status="oom", oom_phase=phase)
        else:
            self.record["status"] = "error"
            log("".join(traceback.format_exception(err))[-4000:])

    def finish(self) -> Measurement:
        if hasattr(self, "tracker"):
            self.record["phases"] = dict(self.tracker.phases)
            alloc, reserved = self.tracker.peaks()
            self.record.update(peak_allocated=alloc, peak_reserved=reserved)
        if self.device_kind == "cuda" and hasattr(self, "poller"):
            peak = self.poller.stop()
            if peak is not None and self.baseline is not None:
                self.record["peak_device"] = peak - self.baseline
            self.record["paged_bytes"] = sum(t.nbytes for t in _paged_tensors())
        if hasattr(self, "torch"):
            from .provenance import provenance

            self.record["provenance"] = provenance(self.torch, self.nvml)
        return Measurement(**self.record)


def _paged_tensors() -> list:
    """bitsandbytes' managed optimizer buffers (``functional.py:get_paged`` registers each with the
    ``GlobalPageManager``); torch sees them as CPU tensors, so its CUDA statistics leave them out."""
    if "bitsandbytes" not in sys.modules:
        return []
    from bitsandbytes.functional import GlobalPageManager

    return list(GlobalPageManager.get_instance().paged_tensors)


def measure(scenario: Scenario, device: str = "cuda", history_path: str | None = None) -> Measurement:
    run = Run(scenario, device, history_path)
    try:
        run.setup()
        run.run()
    except Exception as err:  # noqa: BLE001 - every failure becomes a record
        run.fail(err)
    result = run.finish()
    if run.recorder is not None:
        try:
            sidecar = run.recorder.dump(result)
            log(f"history: {sidecar.events} events, {sidecar.pickle_bytes} B -> {history_path}")
        except Exception as err:  # noqa: BLE001 - the measurement stands without its history
            log(f"history not written: {type(err).__name__}: {err}")
    elif history_path:
        log("--history needs a CUDA run: not recorded")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m planner.measure.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="the Scenario as JSON")
    parser.add_argument("--result", required=True, help="where to write the Measurement (JSON)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--history", metavar="PATH", help="record the allocator history into PATH (.pickle.gz) "
                        "and a sidecar .json beside it (planner.measure.history)")
    args = parser.parse_args(argv)
    try:
        args.scenario = Scenario.model_validate_json(args.scenario)
    except ValueError as err:
        parser.error(f"--scenario is not a valid Scenario: {err}")
    if args.history and args.scenario.gpus > 1:
        parser.error("--history records one GPU's allocator: not with gpus > 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args.scenario, args.device, args.history)
    path = Path(args.result)
    if args.scenario.gpus > 1:
        path = fsdp.rank_path(path, int(os.environ.get("RANK", 0)))
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(result.model_dump_json() + "\n")
    tmp.replace(path)
    log(f"{args.scenario.name}: {result.status}")
    return 3 if args.scenario.gpus > 1 and result.status != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
