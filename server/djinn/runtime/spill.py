"""The disk tier: swapped sessions the host pool cannot hold wait in a spill file on local disk.

When a paused session must leave the device and the pinned host pool is full, the coldest
session already in the pool (paused longest, nothing in flight) moves on to disk, and its pool
region goes to the one leaving the device. Coming back is the same path in reverse: disk ->
a pool region -> the device. The pool regions are the staging buffers: pinned, page-aligned,
so a read or write goes straight between them and the file (O_DIRECT where the file system
allows it, no page cache in between: the host's RAM is the pool's).

One file (`--spill-dir`, `--spill-gb`), created and unlinked at once (nothing is left behind
however the server ends), carved into regions as the host pool is. Reads and writes run on a
few I/O threads in slices (os.preadv/pwritev release the GIL), so the worker and every other
session's compute go on meanwhile; the scheduler polls a move as it polls a copy. Each move's
bytes and seconds are measured and summed (telemetry shows GB/s each way).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .host_pool import with_region

ALIGN = 4096
SLICE = 64 << 20   # bytes per I/O call: several in flight keep an NVMe queue busy


def _align(n: int) -> int:
    return (int(n) + ALIGN - 1) // ALIGN * ALIGN


class SpillFull(Exception):
    pass


class Move:
    """One region's write (host -> disk) or read (disk -> host) in flight."""

    def __init__(self, direction: str, nbytes: int, futures: list[Future], t0: float):
        self.direction, self.nbytes, self.futures, self.t0 = direction, nbytes, futures, t0
        self.seconds = 0.0

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def result(self) -> float:
        """Waits; raises the first I/O error; the move's measured seconds."""
        for f in self.futures:
            f.result()
        if not self.seconds:
            self.seconds = max(f.result() for f in self.futures) - self.t0
        return self.seconds


class SpillFile:
    def __init__(self, directory: str, nbytes: int, threads: int = 4):
        self.nbytes = _align(nbytes)
        os.makedirs(directory, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="djinn-spill-", dir=directory)
        os.close(fd)
        self.direct = True
        try:
            self.fd = os.open(path, os.O_RDWR | getattr(os, "O_DIRECT", 0))
            if not hasattr(os, "O_DIRECT"):
                self.direct = False
        except OSError:          # tmpfs and some others refuse O_DIRECT: buffered I/O
            self.fd, self.direct = os.open(path, os.O_RDWR), False
        self._buffered = os.open(path, os.O_RDWR)   # for buffers O_DIRECT cannot take
        os.unlink(path)          # gone with the last descriptor, however the process ends
        self.path = path
        try:
            os.posix_fallocate(self._buffered, 0, self.nbytes)   # the room is really there (or ENOSPC now)
        except (OSError, AttributeError) as e:
            self.close()
            raise RuntimeError(f"cannot make a {self.nbytes / 1e9:.1f} GB spill file in {directory}: {e}") from e
        self._free: list[tuple[int, int]] = [(0, self.nbytes)]
        self.used = 0
        self._lock = threading.Lock()
        self._io = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="djinn-spill")
        self.totals = {"out": [0, 0, 0.0], "in": [0, 0, 0.0]}   # moves, bytes, seconds

    # ------------------------------------------------------------ regions
    def capacity(self, size: int) -> int:
        """Bytes of sessions of `size` the file holds when empty (whole regions)."""
        return self.nbytes // _align(size) * _align(size)

    def reserve(self, size: int) -> tuple[int, int] | None:
        size = _align(size)
        with self._lock:
            for i, (off, room) in enumerate(self._free):
                if room >= size:
                    self._free[i:i + 1] = [] if room == size else [(off + size, room - size)]
                    self.used += size
                    return off, size
        return None

    def release(self, offset: int, size: int) -> None:
        with self._lock:
            self.used -= size
            self._free = with_region(self._free, offset, size)

    # ------------------------------------------------------------ moves
    def write(self, region: torch.Tensor, offset: int) -> Move:
        """Starts writing `region` (a uint8 host tensor) at `offset` of the file."""
        return self._move("out", region, offset)

    def read(self, region: torch.Tensor, offset: int) -> Move:
        """Starts reading len(region) bytes at `offset` into `region`."""
        return self._move("in", region, offset)

    def _move(self, direction: str, region: torch.Tensor, offset: int) -> Move:
        view = memoryview(region.numpy()).cast("B")
        n = len(view)
        aligned = region.data_ptr() % ALIGN == 0 and n % ALIGN == 0 and offset % ALIGN == 0
        fd = self.fd if (self.direct and aligned) else self._buffered
        t0 = time.perf_counter()
        futures = [self._io.submit(self._slice, direction, fd, view[i:i + SLICE], offset + i)
                   for i in range(0, n, SLICE)]
        return Move(direction, n, futures, t0)

    @staticmethod
    def _slice(direction: str, fd: int, buf: memoryview, offset: int) -> float:
        done = 0
        while done < len(buf):
            part = buf[done:]
            k = os.pwritev(fd, [part], offset + done) if direction == "out" else os.preadv(fd, [part], offset + done)
            if k <= 0:
                raise OSError(f"spill file: {'write' if direction == 'out' else 'read'} of {len(part)} bytes at "
                              f"{offset + done} returned {k}")
            done += k
        return time.perf_counter()

    def finished(self, move: Move) -> float:
        """A move that is done: its seconds, counted in the totals (raises its I/O error)."""
        sec = move.result()
        t = self.totals[move.direction]
        t[0], t[1], t[2] = t[0] + 1, t[1] + move.nbytes, t[2] + sec
        return sec

    def gb_per_s(self, direction: str) -> float:
        _, nbytes, sec = self.totals[direction]
        return nbytes / sec / 1e9 if sec > 0 else 0.0

    def close(self) -> None:
        io = getattr(self, "_io", None)
        if io is not None:
            io.shutdown(wait=True, cancel_futures=True)
        for fd in (getattr(self, "fd", None), getattr(self, "_buffered", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
