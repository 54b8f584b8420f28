"""The pinned host pool: carved into per-session regions, pinned in the background.

Pinning is slow (0.67 s per GiB through cudaHostAlloc on the lent H200 host; 0.47 s per GiB
with cudaHostRegister of torch.empty's memory on 8 threads, 0.04 s per GiB when that memory is
an mmap in transparent huge pages faulted in first: bench/pin_probe.py), and 96 GB of it up
front kept the server from answering for 40 to 50 s. So the pool is several chunks (about 2 GB each, a whole number
of planned session regions; one 96 GB pinned allocation was refused on that host anyway), and
the server starts serving as soon as the weights are in while the chunks are pinned in order
behind it: chunk 0 alone first (so the first session waits a second or two at most), then the
rest on up to 8 threads, each registering one chunk with cudaHostRegister.

A region lives inside one chunk. A session holds one only while its state is on the host: the
scheduler reserves it on the way out (in a chunk a copy can use now) and releases it once the
session is back; admission (Scheduler.add) counts the device and the pool together, so a paused
session can always leave. A reservation never waits for pinning: it takes room in a pinned
chunk when there is some, else in a chunk still to come. What waits is
the first copy into that chunk (`view`, on a swap-out), at most `wait_s` seconds (HostPoolTimeout).
Pinning goes in chunk order and regions are handed out in that order, so the sessions paused
longest, which are evicted first, hold the chunks pinned first: on the H200, Exp 3 created its
50 sessions at once and waited ~50 s for ~88 GB of regions when reservations waited for pins.
If pinning stops short (out of memory, a refused registration), the chunks that never came are
plain pageable memory on first use: slower, synchronous copies, but every session can still leave
the device.

Unpinned pools (the CPU "host pool", pin=False) take the same path with plain allocations,
which are lazy and cost nothing; by default (background=False) the constructor returns once
every chunk is ready, as it always did.

close() (server shutdown) stops pinning: chunks not started are never pinned, the ones being
registered are waited for (bounded), and every registered chunk is unregistered.
"""
from __future__ import annotations

import mmap
import os
import threading
import time
from typing import Callable

import torch

ALIGN = 4096


class HostPoolFull(Exception):
    pass


class HostPoolTimeout(HostPoolFull):
    """A reservation waited for chunks still being pinned and gave up."""


def _huge_page_memory(nbytes: int):
    """Plain memory for a chunk, in transparent huge pages where the kernel has them, faulted in
    before it is registered: on the lent H200 host that page-locks at ~25 GB/s on 8 threads
    against ~2.3 GB/s for torch.empty's 4 KiB pages (bench/pin_probe.py). -> (tensor, mmap)."""
    try:
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError, AttributeError):
        return torch.empty(nbytes, dtype=torch.uint8), None
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass   # THP off: still faulted in here, on this thread, not inside the registration
    t = torch.frombuffer(m, dtype=torch.uint8)
    t[::4096].fill_(0)
    return t, m


def with_region(free: list[tuple[int, int]], offset: int, size: int) -> list[tuple[int, int]]:
    """A sorted free list (offset, size) with one region given back, neighbours merged."""
    merged: list[tuple[int, int]] = []
    for o, n in sorted(free + [(offset, size)]):
        if merged and merged[-1][0] + merged[-1][1] == o:
            merged[-1] = (merged[-1][0], merged[-1][1] + n)
        else:
            merged.append((o, n))
    return merged


def _align(n: int) -> int:
    return (int(n) + ALIGN - 1) // ALIGN * ALIGN


def _plain(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8)


class HostPool:
    """`nbytes` of host memory in chunks of `chunk_bytes` (the last one shorter).

    background: pin on daemon threads and return at once (the server); False: return when
    done (benchmarks, tests). threads: how many chunks are pinned at once after chunk 0
    (default min(8, chunks, cores)). pin_fn(nbytes) -> uint8 tensor and unpin_fn(tensor)
    replace the default (cudaHostRegister / cudaHostUnregister, or plain memory) in tests.
    on_done(pool) runs on the pinning thread once every chunk is in (or pinning stopped).
    device: the CUDA device index whose context registers the chunks (default: the current one).
    """

    def __init__(self, nbytes: int, pin: bool, chunk_bytes: int | None = None, *, background: bool = False,
                 threads: int | None = None, pin_fn: Callable[[int], torch.Tensor] | None = None,
                 unpin_fn: Callable[[torch.Tensor], None] | None = None, wait_s: float = 60.0,
                 on_done: Callable[["HostPool"], None] | None = None, device: int | None = None):
        self.nbytes = int(nbytes)
        self.pinned = pin
        self.chunk = _align(min(chunk_bytes or self.nbytes, self.nbytes) or ALIGN)
        sizes = [self.chunk] * (self.nbytes // self.chunk)
        if self.nbytes % self.chunk:
            sizes.append(_align(self.nbytes % self.chunk))
        self.sizes = sizes
        # A global offset is chunk_index * self.chunk + offset inside the chunk.
        self.buffers: list[torch.Tensor | None] = [None] * len(sizes)
        # per chunk, sorted; every chunk's room can be handed out before the chunk is pinned
        self._free: list[list[tuple[int, int]]] = [[(0, n)] for n in sizes]
        self._pinning: set[int] = set()  # chunks being pinned right now
        self.fallback_bytes = 0          # chunks that could not be pinned, given plain memory instead
        self._fallback: set[int] = set()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.used = 0
        self.wait_s = float(wait_s)
        self.pinned_bytes = 0          # bytes of the chunks ready so far (telemetry)
        self.pin_seconds = 0.0         # how long pinning every chunk took; 0 while it runs
        self.error = ""                # why pinning stopped short ("" normally)
        self._pin_fn = pin_fn or (self._pin_cuda if pin else _plain)
        self._unpin_fn = unpin_fn if unpin_fn is not None else (self._unpin_cuda if pin and pin_fn is None else None)
        self._registered: set[int] = set()   # data_ptr of chunks we registered with cudaHostRegister
        self._backing: dict[int, object] = {}  # data_ptr -> the mmap under a registered chunk
        # The pinning threads register in this device's context (a new thread's current device is
        # 0: with --gpu 1 that would create a context on GPU 0 and pin for the wrong one).
        if device is None and pin and pin_fn is None:
            device = torch.cuda.current_device()
        self.device = device
        self._next = 0                 # the next chunk to pin (in order)
        self._active = 0               # chunks being pinned right now
        self._closed = False
        self._unregister_on_close = True
        self._on_done = on_done
        # What pinning costs the sessions that run meanwhile: these threads sit in the kernel
        # faulting in, zeroing and locking pages, about 4 GiB/s in all (0.25 s/GiB measured with
        # 4 threads), on up to 8 of the H200 host's 16 cores. That is a few percent of the host's
        # DRAM bandwidth and far below the ~55 GB/s a swap copy moves; the page faults also take
        # the process's address-space lock, so a large CPU allocation elsewhere may wait a little.
        # The model load is over before the pool starts. Chunk 0 goes alone so the first session
        # has room soonest (~1 s for 1.8 GB); later chunks on the same thread count as before.
        self.threads = max(1, threads or min(8, len(sizes), os.cpu_count() or 1))
        self._t0 = time.perf_counter()
        self._lead = threading.Thread(target=self._run, name="djinn-host-pool-pin", daemon=True)
        self._helpers: list[threading.Thread] = []
        self._lead.start()
        if not background:
            self.wait_pinned()
            if self.error:
                self.close()
                raise RuntimeError(f"cannot allocate the host pool: {self.error}")

    # ------------------------------------------------------------ pinning (background threads)
    def _pin_cuda(self, nbytes: int) -> torch.Tensor:
        """Page-locked memory: registered plain memory (parallelises), else cudaHostAlloc."""
        if self.device is not None:
            torch.cuda.set_device(self.device)   # per thread; the server's own threads are not touched
        buf, backing = _huge_page_memory(nbytes)
        # cudaHostRegister releases the GIL in torch's binding: the loop and the worker keep running.
        if torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), nbytes, 0) == 0 and buf.is_pinned():
            with self._lock:
                self._registered.add(buf.data_ptr())
                self._backing[buf.data_ptr()] = backing
            return buf
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def _unpin_cuda(self, buf: torch.Tensor) -> None:
        with self._lock:
            mine = buf.data_ptr() in self._registered
            self._registered.discard(buf.data_ptr())
        if mine:   # a cudaHostAlloc fallback is freed by torch with its tensor
            torch.cuda.cudart().cudaHostUnregister(buf.data_ptr())
            with self._lock:
                self._backing.pop(buf.data_ptr(), None)   # the mapping goes with the last tensor on it

    def _run(self) -> None:
        self._drain(once=True)           # chunk 0 alone: the first sessions' room, soonest
        self._helpers = [threading.Thread(target=self._drain, name=f"djinn-host-pool-pin-{i}", daemon=True)
                         for i in range(self.threads - 1)]
        for t in self._helpers:
            t.start()
        self._drain()
        for t in self._helpers:
            t.join()
        with self._cond:
            if self.pinned_bytes == sum(self.sizes):
                self.pin_seconds = time.perf_counter() - self._t0
            self._cond.notify_all()
        if self._on_done is not None and not self._closed:
            try:
                self._on_done(self)
            except Exception:  # noqa: BLE001 - a report only
                pass

    def _drain(self, once: bool = False) -> None:
        while True:
            with self._cond:
                if self._closed or self.error or self._next >= len(self.sizes):
                    return
                c, self._next, self._active = self._next, self._next + 1, self._active + 1
                self._pinning.add(c)
            try:
                buf = self._pin_fn(self.sizes[c])
            except Exception as e:  # noqa: BLE001 - out of memory, refused registration: the rest stays unpinned
                with self._cond:
                    self._active -= 1
                    self._pinning.discard(c)
                    self.error = self.error or (f"chunk {c} of {len(self.sizes)} ({self.sizes[c] / 1e9:.2f} GB) could "
                                                f"not be {'pinned' if self.pinned else 'allocated'}: {type(e).__name__}: {e}")
                    self._cond.notify_all()
                return
            with self._cond:
                self._active -= 1
                self._pinning.discard(c)
                closed = self._closed
                if not closed:
                    self.buffers[c] = buf
                    self.pinned_bytes += self.sizes[c]
                self._cond.notify_all()
            if closed:                   # close() came while this chunk was being pinned
                if self._unregister_on_close:
                    self._unpin(buf)
                return
            if once:
                return

    def _unpin(self, buf: torch.Tensor) -> None:
        if self._unpin_fn is not None:
            try:
                self._unpin_fn(buf)
            except Exception:  # noqa: BLE001 - shutting down: nothing else to do with it
                pass

    # ------------------------------------------------------------ state
    @property
    def pinning(self) -> bool:
        """True while chunks are still being pinned (a reservation may then wait)."""
        with self._lock:
            return self._pending()

    def _pending(self) -> bool:
        return not (self._closed or self.error) and (self._next < len(self.sizes) or self._active > 0)

    def wait_pinned(self, timeout: float | None = None) -> bool:
        """Waits until every chunk is in (or pinning stopped); True if it stopped in time."""
        self._lead.join(timeout)
        return not self._lead.is_alive()

    def close(self, timeout: float = 30.0, unregister: bool = True) -> None:
        """Stops pinning (chunks not started are never pinned), waits up to `timeout` for the
        chunks being pinned right now, then unregisters every registered chunk. A chunk whose
        registration is still running after the timeout is unregistered by its own thread when
        it returns. unregister=False abandons the chunks as they are (a copy may still use them)."""
        with self._cond:
            if self._closed:
                return
            self._unregister_on_close, self._closed = unregister, True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in [self._lead] + list(self._helpers):
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            bufs = [b for c, b in enumerate(self.buffers) if b is not None and c not in self._fallback]
            self.buffers = [None] * len(self.sizes)
            self._free = [[] for _ in self.sizes]
            self._cond.notify_all()
        if unregister:
            for b in bufs:
                self._unpin(b)

    # ------------------------------------------------------------ regions
    def _fit(self, size: int) -> tuple[int, int] | None:
        """First fit: pinned chunks first (a copy there never waits), then the others in
        pinning order."""
        n = len(self.sizes)
        for c in [c for c in range(n) if self.buffers[c] is not None] + [c for c in range(n) if self.buffers[c] is None]:
            free = self._free[c]
            for i, (off, room) in enumerate(free):
                if room >= size:
                    free[i:i + 1] = [] if room == size else [(off + size, room - size)]
                    self.used += size
                    return c * self.chunk + off, size
        return None

    def reserve(self, size: int, timeout: float | None = None) -> tuple[int, int]:
        """A region of `size` bytes: (global offset, aligned size). Never waits for pinning (see
        the module notes); a full pool is HostPoolFull at once. `timeout` is unused (kept for
        callers of the earlier, waiting reservation)."""
        size = _align(size)
        with self._cond:
            if self._closed:
                raise HostPoolFull("host pool closed: the server is shutting down")
            hit = self._fit(size)
            if hit is not None:
                return hit
            largest = max((room for free in self._free for _, room in free), default=0)
            short = (f" (only {self.pinned_bytes / 1e9:.2f} GB could be pinned: {self.error})" if self.error else "")
            raise HostPoolFull(
                f"host pool full: {self.used / 1e9:.2f} of {self.nbytes / 1e9:.2f} GB reserved{short}, largest free "
                f"region {largest / 1e9:.3f} GB; a session needs {size / 1e9:.3f} GB. Close sessions or restart the "
                "server with a larger --host-pool-gb")

    def try_reserve(self, size: int, ready_only: bool = False) -> tuple[int, int] | None:
        """A region as reserve() gives, or None when none fits; with `ready_only`, only in a chunk
        a copy can use now (pinned, or plain memory after pinning stopped short)."""
        size = _align(size)
        with self._cond:
            if self._closed:
                return None
            hit = self._fit(size)
            if hit is not None and ready_only and not self._ready_locked(hit[0]):
                self._free_locked(*hit)
                return None
            return hit

    def capacity(self, size: int) -> int:
        """Bytes of regions of `size` the whole pool holds when empty (regions do not span chunks)."""
        size = _align(size)
        return sum(n // size for n in self.sizes) * size

    def ready(self, offset: int) -> bool:
        """Whether a copy into the region at `offset` can start now (its chunk is in, or pinning
        stopped short of it and plain memory will do): the scheduler evicts such sessions first."""
        with self._lock:
            return self._ready_locked(offset)

    def _ready_locked(self, offset: int) -> bool:
        c = offset // self.chunk
        return self.buffers[c] is not None or ((bool(self.error) or not self._pending()) and c not in self._pinning)

    def _buffer(self, c: int, timeout: float | None = None) -> torch.Tensor:
        """Chunk c's memory, waiting for its pinning (at most `timeout`, default wait_s); plain
        memory if pinning stopped before reaching it."""
        deadline = time.monotonic() + (self.wait_s if timeout is None else timeout)
        with self._cond:
            while self.buffers[c] is None:
                if self._closed:
                    raise HostPoolFull("host pool closed: the server is shutting down")
                if (self.error or not self._pending()) and c not in self._pinning:
                    self.buffers[c] = _plain(self.sizes[c])   # pinning stopped short of this chunk
                    self._fallback.add(c)
                    self.fallback_bytes += self.sizes[c]
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HostPoolTimeout(
                        f"host pool chunk {c} still being pinned after {self.wait_s if timeout is None else timeout:.1f} "
                        f"s ({self.pinned_bytes / 1e9:.2f} of {self.nbytes / 1e9:.2f} GB pinned so far): a copy into "
                        "it waited; raise --host-pool-wait-s or use a smaller --host-pool-gb")
                self._cond.wait(left)
            return self.buffers[c]

    def release(self, offset: int, size: int) -> None:
        with self._lock:
            self._free_locked(offset, size)

    def _free_locked(self, offset: int, size: int) -> None:
        c, off = divmod(offset, self.chunk)
        self.used -= size
        if self._closed:
            return
        self._free[c] = with_region(self._free[c], off, size)

    def view(self, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """A typed view into the pool (pinned, so copies to and from the device stay
        asynchronous). The first view into a chunk not pinned yet waits for it (_buffer)."""
        c, off = divmod(offset, self.chunk)
        buf = self._buffer(c)
        n = 1
        for s in shape:
            n *= s
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        return buf[off:off + nbytes].view(dtype).view(shape)
