"""Per-phase memory: torch's caching-allocator statistics (peaks reset when a phase starts) and NVML
device memory at the phase's end. A phase that repeats (forward of every micro-batch, backward, optimizer
of every step) keeps its largest peaks and its last end-of-phase values."""

from __future__ import annotations

from planner.results import PhaseMemory
from planner.measure.cap import check_cap
from planner.measure.nvml import Nvml, PeakPoller


class PhaseTracker:
    """``cuda=False`` (plumbing runs on the CPU) keeps only the name of the running phase."""

    def __init__(self, torch, nvml: Nvml, poller: PeakPoller, *, baseline: int | None = None,
                 cap: int | None = None, cuda: bool = True):
        self.torch, self.nvml, self.poller = torch, nvml, poller
        self.baseline, self.cap, self.cuda = baseline, cap, cuda
        self.phases: dict[str, PhaseMemory] = {}
        self.current: str | None = None

    def enter(self, phase: str) -> None:
        """Close the running phase (record it) and start ``phase`` with fresh allocator peaks."""
        self.close()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.current = phase

    def close(self) -> None:
        """Record the running phase; raises ``MemoryCapExceeded`` when the device footprint is over the cap."""
        if self.current is None:
            return
        if self.cuda:
            self.torch.cuda.synchronize()
            self.record(self.current)
            check_cap(self.cap, self.nvml.used(), self.baseline)
        self.current = None

    def record(self, phase: str) -> PhaseMemory | None:
        """Merge the allocator's current state into ``phase`` (also used for a phase cut short by an OOM)."""
        if not self.cuda:
            return None
        stats = self.torch.cuda.memory_stats()
        used = self.poller.sample()
        now = PhaseMemory(
            allocated=stats.get("allocated_bytes.all.current", 0),
            reserved=stats.get("reserved_bytes.all.current", 0),
            peak_allocated=stats.get("allocated_bytes.all.peak", 0),
            peak_reserved=stats.get("reserved_bytes.all.peak", 0),
            device_used=used,
            process_used=self.nvml.process_used(),
        )
        before = self.phases.get(phase)
        if before is not None:
            now = now.model_copy(update={
                "peak_allocated": max(now.peak_allocated, before.peak_allocated),
                "peak_reserved": max(now.peak_reserved, before.peak_reserved),
            })
        self.phases[phase] = now
        return now

    def peaks(self) -> tuple[int | None, int | None]:
        if not self.phases:
            return None, None
        return (max(p.peak_allocated for p in self.phases.values()), max(p.peak_reserved for p in self.phases.values()))
