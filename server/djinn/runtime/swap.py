"""A session's swappable state and the copies that move it between device and host.

A session owns: its KV cache (one [layers, 2, kv_heads, context, head_dim] tensor) and the
activations saved at its pause point (a handful of [tokens, dim]-sized tensors). Both move
together. On CUDA the copies run on two dedicated streams, one per direction, so an eviction
and a swap-in overlap (PCIe is full duplex: both directions at once measured 99.7 GB/s in all
on the H200 host); they are ordered with events and timed with CUDA events, and the worker
keeps computing other sessions meanwhile. On the CPU both "pools"
are RAM and the copy is timed with the wall clock: the same code path, testable in CI.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .host_pool import HostPool

NONE, DEVICE, HOST, MOVING_OUT, MOVING_IN = "none", "device", "host", "moving_out", "moving_in"
DISK, TO_DISK, FROM_DISK = "disk", "moving_to_disk", "moving_from_disk"   # the disk tier (runtime/spill.py)
ON_DISK = (DISK, TO_DISK, FROM_DISK)


@dataclass
class SwapRecord:
    direction: str      # "out" or "in"
    nbytes: int
    ms: float           # measured copy time


@dataclass
class _Flight:
    direction: str
    start: object
    end: object
    nbytes: int
    keep: list          # device tensors kept alive until a swap-out copy finished
    t0: float = 0.0
    waited: bool = True  # swap-in: the compute stream already waits for its end event


@dataclass
class SessionMemory:
    kv_shape: tuple
    dtype: torch.dtype
    act_capacity: int                     # bytes reserved in the host region for activations
    host_offset: int = -1
    host_size: int = 0
    location: str = NONE
    kv: torch.Tensor | None = None        # on the device while resident
    acts: dict = field(default_factory=dict)  # name -> device tensor while resident
    host_acts: dict = field(default_factory=dict)  # name -> (offset in region, dtype, shape) while swapped
    flight: _Flight | None = None
    disk_offset: int = -1                 # its region of the spill file while on disk
    disk_size: int = 0
    move: object = None                   # a spill.Move in flight (to or from disk)

    @property
    def kv_bytes(self) -> int:
        n = 1
        for s in self.kv_shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()

    @property
    def total_bytes(self) -> int:
        return self.kv_bytes + self.act_capacity

    def device_bytes(self) -> int:
        """Bytes this session holds on the device now: its whole reservation (KV plus the
        activation allowance) while resident, and while a copy in either direction is in flight."""
        return self.total_bytes if self.location in (DEVICE, MOVING_IN, MOVING_OUT) else 0


class Swapper:
    """Moves SessionMemory between the device and the pinned host pool."""

    def __init__(self, device: torch.device, pool: HostPool, spill=None):
        self.device = device
        self.pool = pool
        self.spill = spill    # a spill.SpillFile (the disk tier) or None
        self.cuda = device.type == "cuda"
        # one copy stream per direction: a swap-out never queues behind a swap-in, nor the reverse
        self.out_stream = torch.cuda.Stream(device=device) if self.cuda else None
        self.in_stream = torch.cuda.Stream(device=device) if self.cuda else None

    # -------------------------------------------------------------- allocation
    def allocate(self, mem: SessionMemory) -> None:
        """First residency: a zeroed KV buffer on the device (no copy)."""
        mem.kv = torch.zeros(mem.kv_shape, dtype=mem.dtype, device=self.device)
        mem.acts = {}
        mem.location = DEVICE

    def free(self, mem: SessionMemory) -> None:
        self.wait(mem)
        if mem.move is not None:
            try:
                self.poll_disk(mem, block=True)
            except OSError:
                mem.move = None   # its regions are freed below all the same
        mem.kv, mem.acts, mem.host_acts = None, {}, {}
        mem.location = NONE
        if mem.host_offset >= 0:
            self.pool.release(mem.host_offset, mem.host_size)
            mem.host_offset, mem.host_size = -1, 0
        if mem.disk_offset >= 0:
            self.spill.release(mem.disk_offset, mem.disk_size)
            mem.disk_offset, mem.disk_size = -1, 0

    def _drop_region(self, mem: SessionMemory) -> None:
        """Back on the device: its host region goes back to the pool (a later swap-out reserves one again)."""
        mem.host_acts = {}
        if mem.host_offset >= 0:
            self.pool.release(mem.host_offset, mem.host_size)
            mem.host_offset, mem.host_size = -1, 0

    def _host_kv(self, mem: SessionMemory) -> torch.Tensor:
        return self.pool.view(mem.host_offset, mem.dtype, mem.kv_shape)

    # -------------------------------------------------------------- swap out
    def swap_out(self, mem: SessionMemory) -> SwapRecord | None:
        """Starts the copy to host. On CUDA it returns None and completes later (poll);
        on the CPU it completes now and returns the record."""
        assert mem.location == DEVICE, mem.location
        host_kv = self._host_kv(mem)
        off = mem.host_offset + mem.kv_bytes
        pairs, mem.host_acts = [(host_kv, mem.kv)], {}
        for name, t in mem.acts.items():
            nbytes = t.numel() * t.element_size()
            if off + nbytes > mem.host_offset + mem.host_size:
                raise RuntimeError(f"activation '{name}' does not fit the session's host region")
            pairs.append((self.pool.view(off, t.dtype, tuple(t.shape)), t))
            mem.host_acts[name] = (off, t.dtype, tuple(t.shape))
            off += nbytes
        nbytes = sum(d.numel() * d.element_size() for d, _ in pairs)
        keep = [mem.kv] + list(mem.acts.values())
        mem.kv, mem.acts = None, {}
        if not self.cuda:
            t0 = time.perf_counter()
            for dst, src in pairs:
                dst.copy_(src)
            ms = (time.perf_counter() - t0) * 1e3
            mem.location = HOST
            return SwapRecord("out", nbytes, ms)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.out_stream.wait_stream(torch.cuda.current_stream(self.device))  # the data must be computed first
        with torch.cuda.stream(self.out_stream):
            start.record()
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
            end.record()
        mem.flight = _Flight("out", start, end, nbytes, keep)
        mem.location = MOVING_OUT
        return None

    # -------------------------------------------------------------- swap in
    def swap_in(self, mem: SessionMemory, wait: bool = True) -> SwapRecord | None:
        """Starts the copy back to the device. `wait`: the compute stream waits for it now (its
        next kernels are this session's); a prefetch passes False, so the kernels of whatever
        runs meanwhile do not queue behind the copy, and calls await_in before the session's own
        first kernel."""
        assert mem.location == HOST, mem.location
        host_kv = self._host_kv(mem)
        kv = torch.empty(mem.kv_shape, dtype=mem.dtype, device=self.device)
        acts = {name: torch.empty(shape, dtype=dt, device=self.device) for name, (_, dt, shape) in mem.host_acts.items()}
        pairs = [(kv, host_kv)] + [(acts[n], self.pool.view(off, dt, shape)) for n, (off, dt, shape) in mem.host_acts.items()]
        nbytes = sum(d.numel() * d.element_size() for d, _ in pairs)
        mem.kv, mem.acts = kv, acts
        if not self.cuda:
            t0 = time.perf_counter()
            for dst, src in pairs:
                dst.copy_(src)
            mem.location = DEVICE
            self._drop_region(mem)
            return SwapRecord("in", nbytes, (time.perf_counter() - t0) * 1e3)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        compute = torch.cuda.current_stream(self.device)
        self.in_stream.wait_stream(compute)  # the buffers were allocated on the compute stream
        with torch.cuda.stream(self.in_stream):
            start.record()
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
            end.record()
        if wait:
            compute.wait_event(end)  # later kernels on this session wait for the data, the CPU does not
        mem.flight = _Flight("in", start, end, nbytes, [], waited=wait)
        mem.location = MOVING_IN
        return None

    def await_in(self, mem: SessionMemory) -> None:
        """Before a session's first kernel after a prefetch (swap_in with wait=False): the current
        stream waits for the copy still in flight (the CPU does not). Once poll has seen the copy
        land, or on the CPU, there is nothing to wait for."""
        f = mem.flight
        if f is not None and f.direction == "in" and not f.waited:
            torch.cuda.current_stream(self.device).wait_event(f.end)
            f.waited = True

    # -------------------------------------------------------------- completion
    def poll(self, mem: SessionMemory, block: bool = False) -> SwapRecord | None:
        """Finishes an in-flight copy if it is done (or waits for it); returns its record."""
        f = mem.flight
        if f is None:
            return None
        if block:
            f.end.synchronize()
        elif not f.end.query():
            return None
        ms = f.start.elapsed_time(f.end)
        mem.flight = None
        mem.location = HOST if f.direction == "out" else DEVICE
        f.keep.clear()  # the device copy is no longer needed: free it now
        if f.direction == "in":
            self._drop_region(mem)
        return SwapRecord(f.direction, f.nbytes, ms)

    def wait(self, mem: SessionMemory) -> SwapRecord | None:
        return self.poll(mem, block=True)

    # -------------------------------------------------------------- the disk tier
    def _on_disk(self, mem: SessionMemory) -> None:
        """Its state is (only) in the spill file: the pool region goes back."""
        self.pool.release(mem.host_offset, mem.host_size)
        mem.host_offset, mem.host_size, mem.location = -1, 0, DISK

    def _in_pool(self, mem: SessionMemory) -> None:
        """Its state is (only) in its pool region: absolute activation offsets, the disk region back."""
        mem.host_acts = {n: (off + mem.host_offset, dt, shape) for n, (off, dt, shape) in mem.host_acts.items()}
        self.spill.release(mem.disk_offset, mem.disk_size)
        mem.disk_offset, mem.disk_size, mem.location = -1, 0, HOST

    def _region(self, mem: SessionMemory) -> torch.Tensor:
        return self.pool.view(mem.host_offset, torch.uint8, (mem.host_size,))

    def spill_out(self, mem: SessionMemory) -> bool:
        """Starts moving a session in the host pool to the spill file; False if the file is full.
        Its pool region is released once the write has landed (poll_disk)."""
        assert mem.location == HOST and mem.flight is None and mem.move is None, mem.location
        hit = self.spill.reserve(mem.host_size)
        if hit is None:
            return False
        mem.disk_offset, mem.disk_size = hit
        # offsets of the saved activations become relative: the region it comes back to differs
        mem.host_acts = {n: (off - mem.host_offset, dt, shape) for n, (off, dt, shape) in mem.host_acts.items()}
        mem.move = self.spill.write(self._region(mem), mem.disk_offset)
        mem.location = TO_DISK
        return True

    def spill_in(self, mem: SessionMemory, region: tuple[int, int]) -> None:
        """Starts reading a spilled session back into `region` (reserved in the host pool)."""
        assert mem.location == DISK and mem.move is None, mem.location
        mem.host_offset, mem.host_size = region
        mem.move = self.spill.read(self._region(mem)[:mem.disk_size], mem.disk_offset)
        mem.location = FROM_DISK

    def poll_disk(self, mem: SessionMemory, block: bool = False) -> SwapRecord | None:
        """Finishes a move to or from disk if it is done (or waits for it): its record
        ("spill_out": to disk, "spill_in": back in the pool), or None while it runs. An I/O error
        is raised after the session's state is put back as it was before the move."""
        m = mem.move
        if m is None or (not block and not m.done()):
            return None
        mem.move = None
        landed = {"out": self._on_disk, "in": self._in_pool}
        try:
            sec = self.spill.finished(m)
        except OSError:
            landed["in" if m.direction == "out" else "out"](mem)   # back where it was: nothing lost
            raise
        landed[m.direction](mem)
        return SwapRecord("spill_" + m.direction, m.nbytes, sec * 1e3)
