"""The pinned host pool: one buffer allocated at start-up, carved into per-session regions.

Pinning is slow (about 0.45 s per GiB on the H200 host), so it happens once, before any
session exists. Each session reserves its region when it is created, so that a paused
session can always be swapped out: a full pool refuses new sessions, it never strands one.
"""
from __future__ import annotations

import threading

import torch

ALIGN = 4096


class HostPoolFull(Exception):
    pass


class HostPool:
    def __init__(self, nbytes: int, pin: bool):
        self.nbytes = int(nbytes)
        self.pinned = pin
        self.buffer = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=pin)
        self._free: list[tuple[int, int]] = [(0, self.nbytes)]  # (offset, size), sorted by offset
        self._lock = threading.Lock()
        self.used = 0

    def reserve(self, size: int) -> tuple[int, int]:
        """First fit; returns (offset, aligned size)."""
        size = (int(size) + ALIGN - 1) // ALIGN * ALIGN
        with self._lock:
            for i, (off, free) in enumerate(self._free):
                if free >= size:
                    if free == size:
                        self._free.pop(i)
                    else:
                        self._free[i] = (off + size, free - size)
                    self.used += size
                    return off, size
        raise HostPoolFull(
            f"host pool full: {self.used / 1e9:.2f} of {self.nbytes / 1e9:.2f} GB reserved; "
            f"a session needs {size / 1e9:.3f} GB. Close sessions or restart the server with a larger --host-pool-gb")

    def release(self, offset: int, size: int) -> None:
        with self._lock:
            self._free.append((offset, size))
            self._free.sort()
            merged: list[tuple[int, int]] = []
            for off, sz in self._free:
                if merged and merged[-1][0] + merged[-1][1] == off:
                    merged[-1] = (merged[-1][0], merged[-1][1] + sz)
                else:
                    merged.append((off, sz))
            self._free = merged
            self.used -= size

    def view(self, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """A typed view into the pool (still pinned, so copies to the device stay asynchronous)."""
        n = 1
        for s in shape:
            n *= s
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        return self.buffer[offset:offset + nbytes].view(dtype).view(shape)
