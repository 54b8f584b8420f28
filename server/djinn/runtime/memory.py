"""What the device holds, measured: the allocator's figures, NVML's, and the budget's ledger.

The ledger (accounted bytes) is what the budget limits: runtime overhead (CUDA context,
measured by NVML at start-up) + weights (sum of parameter storage) + workspace (allocator
peak of a full-context pass, measured at start-up) + every session's resident KV and saved
activations (exact tensor sizes). The allocator is capped to the same budget so the ledger
cannot be wrong by much without an out-of-memory error showing it.
"""
from __future__ import annotations

import threading

import torch


class Nvml:
    """NVML device-used reading; absent (0) on CPU-only hosts or without nvidia-ml-py."""

    def __init__(self, device: torch.device):
        self.handle, self.uuid = None, ""
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            # By UUID: torch's index counts CUDA_VISIBLE_DEVICES, NVML's counts every GPU of the host.
            uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
            self.uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}" if uuid else ""
            self.handle = pynvml.nvmlDeviceGetHandleByUUID(self.uuid) if self.uuid else None
            self._info = pynvml.nvmlDeviceGetMemoryInfo
        except Exception:  # noqa: BLE001 - NVML is optional; its absence is reported as 0
            self.handle = None

    def used(self) -> int:
        return int(self._info(self.handle).used) if self.handle else 0

    def total(self) -> int:
        return int(self._info(self.handle).total) if self.handle else 0


class Ledger:
    """Accounted device bytes, with the budget check and the peak."""

    def __init__(self, budget: int):
        self.budget = budget
        self.overhead = 0
        self.weights = 0
        self.workspace = 0
        self.peak = 0
        self.current = 0     # accounted() as of the worker's last change (note): a consistent reading
        self._lock = threading.Lock()
        self._sessions_fn = lambda: 0

    def bind(self, resident_bytes_fn) -> None:
        self._sessions_fn = resident_bytes_fn

    @property
    def fixed(self) -> int:
        return self.overhead + self.weights + self.workspace

    def accounted(self) -> int:
        return self.fixed + self._sessions_fn()

    def fits(self, extra: int) -> bool:
        return self.accounted() + extra <= self.budget

    def note(self) -> int:
        """Call after every change of resident bytes; keeps the peak."""
        a = self.accounted()
        with self._lock:
            self.peak = max(self.peak, a)
            self.current = a
        return a


def allocator_stats(device: torch.device) -> dict:
    if device.type != "cuda":
        return dict(allocated=0, reserved=0, peak=0, reserved_peak=0)
    return dict(allocated=torch.cuda.memory_allocated(device), reserved=torch.cuda.memory_reserved(device),
                peak=torch.cuda.max_memory_allocated(device), reserved_peak=torch.cuda.max_memory_reserved(device))
