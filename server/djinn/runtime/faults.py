"""Device faults: telling them apart from ordinary errors, and injecting one for tests.

A CUDA error such as a device-side assert poisons the context of the whole process: every
later kernel of every session fails. Such an error is not one session's failure; the server
must say so, fail every session, stop taking GPU work and exit so a supervisor restarts it.
"""
from __future__ import annotations

import torch

_MARKERS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "cudaError",
            "CUDNN_STATUS", "unspecified launch failure", "misaligned address")


class SimulatedDeviceFault(RuntimeError):
    """What a CUDA device fault looks like, for CPU-only tests (--test-fault-injection)."""


def is_device_fault(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return False          # the allocator's refusal; the context is fine
    accel = getattr(torch, "AcceleratorError", None)
    if isinstance(e, SimulatedDeviceFault) or (accel is not None and isinstance(e, accel)):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e) for m in _MARKERS)


def inject(device: torch.device) -> None:
    """A real device fault on CUDA (an out-of-range gather, as a careless index would be without
    the bounds checks); a simulated one on the CPU. Only reachable with --test-fault-injection."""
    if device.type == "cuda":
        x = torch.zeros(4, device=device)
        x[torch.tensor([1 << 20], device=device)].sum()
        torch.cuda.synchronize(device)
        raise SimulatedDeviceFault("the injected CUDA fault did not raise")   # not expected
    raise SimulatedDeviceFault("CUDA error: device-side assert triggered (simulated by --test-fault-injection)")
