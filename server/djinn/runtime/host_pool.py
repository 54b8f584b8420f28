"""The pinned host pool: allocated at start-up, carved into per-session regions.

Pinning is slow (0.67 s per GiB through cudaHostAlloc on the lent H200 host), so it happens
once, before any session exists, and in parallel: each chunk is plain memory registered with
cudaHostRegister on its own thread (0.25 s per GiB with 4 threads there). One 96 GB pinned
allocation was refused on that host, so the pool is several chunks (about 8 GB each, a whole number of planned session regions), and a
region never straddles two chunks. Each session reserves its region when it is created, so
a paused session can always be swapped out: a full pool refuses new sessions, it never
strands one.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

ALIGN = 4096


class HostPoolFull(Exception):
    pass


def _pinned(nbytes: int) -> torch.Tensor:
    """Page-locked memory: registered plain memory (parallelises), else cudaHostAlloc."""
    buf = torch.empty(nbytes, dtype=torch.uint8)
    if torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), nbytes, 0) == 0 and buf.is_pinned():
        return buf
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


def _align(n: int) -> int:
    return (int(n) + ALIGN - 1) // ALIGN * ALIGN


class HostPool:
    def __init__(self, nbytes: int, pin: bool, chunk_bytes: int | None = None):
        self.nbytes = int(nbytes)
        self.pinned = pin
        self.chunk = _align(min(chunk_bytes or self.nbytes, self.nbytes) or ALIGN)
        sizes = [self.chunk] * (self.nbytes // self.chunk)
        if self.nbytes % self.chunk:
            sizes.append(_align(self.nbytes % self.chunk))
        # A global offset is chunk_index * self.chunk + offset inside the chunk.
        if pin and len(sizes) > 1:
            with ThreadPoolExecutor(min(8, len(sizes), os.cpu_count() or 1)) as ex:
                self.buffers = list(ex.map(_pinned, sizes))
        else:
            self.buffers = [torch.empty(n, dtype=torch.uint8, pin_memory=pin) for n in sizes]
        self._free: list[list[tuple[int, int]]] = [[(0, n)] for n in sizes]  # per chunk, sorted
        self._lock = threading.Lock()
        self.used = 0

    def reserve(self, size: int) -> tuple[int, int]:
        """First fit over the chunks; returns (global offset, aligned size)."""
        size = _align(size)
        with self._lock:
            for c, free in enumerate(self._free):
                for i, (off, room) in enumerate(free):
                    if room >= size:
                        free[i:i + 1] = [] if room == size else [(off + size, room - size)]
                        self.used += size
                        return c * self.chunk + off, size
        largest = max((room for free in self._free for _, room in free), default=0)
        raise HostPoolFull(
            f"host pool full: {self.used / 1e9:.2f} of {self.nbytes / 1e9:.2f} GB reserved, largest free region "
            f"{largest / 1e9:.3f} GB; a session needs {size / 1e9:.3f} GB. Close sessions or restart the server "
            "with a larger --host-pool-gb")

    def release(self, offset: int, size: int) -> None:
        c, off = divmod(offset, self.chunk)
        with self._lock:
            free = sorted(self._free[c] + [(off, size)])
            merged: list[tuple[int, int]] = []
            for o, n in free:
                if merged and merged[-1][0] + merged[-1][1] == o:
                    merged[-1] = (merged[-1][0], merged[-1][1] + n)
                else:
                    merged.append((o, n))
            self._free[c] = merged
            self.used -= size

    def view(self, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """A typed view into the pool (still pinned, so copies to the device stay asynchronous)."""
        c, off = divmod(offset, self.chunk)
        n = 1
        for s in shape:
            n *= s
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        return self.buffers[c][off:off + nbytes].view(dtype).view(shape)
