"""Device memory as the driver sees it (NVML through ``nvidia-ml-py``), which is what ``nvidia-smi`` shows:
torch's allocator plus what it cannot see (CUDA context, lazily loaded kernels, library handles,
bitsandbytes' managed optimizer pages while they are resident)."""

from __future__ import annotations

import os
import threading


class Nvml:
    """One GPU's NVML handle; every read returns ``None`` where NVML is missing or refuses."""

    def __init__(self, index: int = 0):
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.pynvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no driver, no package: measurements go on with torch's numbers only
            self.handle = None

    def used(self) -> int | None:
        """``nvmlDeviceGetMemoryInfo(handle).used``: bytes in use on the whole device."""
        if self.handle is None:
            return None
        return int(self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def total(self) -> int | None:
        if self.handle is None:
            return None
        return int(self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).total)

    def driver(self) -> str | None:
        if self.handle is None:
            return None
        version = self.pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)

    def process_used(self, pid: int | None = None) -> int | None:
        """This process's ``usedGpuMemory`` from the running-compute-process list, where the driver reports
        it (inside containers the pid often differs, then ``None``)."""
        if self.handle is None:
            return None
        pid = os.getpid() if pid is None else pid
        try:
            for proc in self.pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory)
        except Exception:
            return None
        return None


class PeakPoller:
    """Samples ``Nvml.used`` on a background thread every ``interval`` seconds and keeps the maximum.
    A sample can miss a spike shorter than the interval; phase-end readings are taken as well."""

    def __init__(self, nvml: Nvml, interval: float = 0.005):
        self.nvml, self.interval = nvml, interval
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qplan-nvml-poller", daemon=True)

    def start(self) -> PeakPoller:
        if self.nvml.handle is not None:
            self._thread.start()
        return self

    def sample(self) -> int | None:
        used = self.nvml.used()
        if used is not None:
            self.peak = used if self.peak is None else max(self.peak, used)
        return used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> int | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
        return self.peak
