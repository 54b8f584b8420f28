"""Small transfers between the device and pinned host memory by a kernel, not the copy engines.

A swap moves 1.7 GB each way on the copy engines (~30 ms). A cudaMemcpy queued behind it, even of
a few bytes (a decode block's table, the next tokens, a pass's logits), waits for it: on the H200
every decode pass that ran while a swap was in flight took 33 ms instead of 8.6 (bench/NOTES.md).
These kernels read or write page-locked host memory directly over PCIe (it is mapped into the
device's address space), so the few KB a pass needs never queue behind a swap.

  to_device(host, out)   pinned host tensor -> device tensor (same dtype and number of elements)
  to_host(src, host)     device tensor -> pinned host tensor; the caller synchronises the stream

`available()` says whether they run here (CUDA, Triton, and a pinned tensor the launcher accepts);
elsewhere callers use plain copies.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .decode_attention import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _copy(src, dst, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = i < n
        tl.store(dst + i, tl.load(src + i, mask=live), mask=live)

_BLOCK = 1024
_ok: dict[int, bool] = {}


def _launch(src: Tensor, dst: Tensor) -> None:
    n = src.numel()
    _copy[(triton.cdiv(n, _BLOCK),)](src, dst, n, BLOCK=_BLOCK)


def available(device: torch.device) -> bool:
    """Once per device: a round trip through pinned memory gives the same numbers."""
    if triton is None or device.type != "cuda":
        return False
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _ok:
        try:
            host = torch.arange(3000, dtype=torch.int64).pin_memory()
            dev = torch.empty(3000, dtype=torch.int64, device=device)
            _launch(host, dev)
            back = torch.zeros(3000, dtype=torch.int64).pin_memory()
            _launch(dev * 2, back)
            torch.cuda.synchronize(device)
            _ok[key] = bool(torch.equal(back, torch.arange(3000, dtype=torch.int64) * 2))
        except Exception:  # noqa: BLE001 - a launcher that refuses host pointers: plain copies then
            _ok[key] = False
    return _ok[key]


def to_device(host: Tensor, out: Tensor) -> Tensor:
    assert host.is_pinned() and host.is_contiguous() and out.is_contiguous() and host.numel() == out.numel()
    _launch(host, out)
    return out


def to_host(src: Tensor, host: Tensor) -> Tensor:
    assert host.is_pinned() and host.is_contiguous() and host.numel() == src.numel()
    _launch(src.contiguous(), host)
    return host


class Staging:
    """Pinned host slots used in turn for uploads: a slot is written again only once the kernel
    that read it has run (an event per slot), so an upload never races the one before."""

    def __init__(self, device: torch.device, nbytes: int = 1 << 16, slots: int = 32):
        self.device = device
        self.slots = [(torch.empty(nbytes, dtype=torch.uint8).pin_memory(), torch.cuda.Event()) for _ in range(slots)]
        self.next = 0

    def upload(self, values: Tensor, out: Tensor) -> Tensor:
        """values (a CPU tensor of out's dtype and size) -> out, on the current stream."""
        buf, done = self.slots[self.next]
        self.next = (self.next + 1) % len(self.slots)
        nbytes = values.numel() * values.element_size()
        if nbytes > buf.numel():
            out.copy_(values)   # larger than a slot: an ordinary copy (a prompt of tens of thousands of tokens)
            return out
        done.synchronize()
        view = buf[:nbytes].view(values.dtype)
        view.copy_(values.reshape(-1))
        to_device(view, out.view(-1))
        done.record()
        return out


class Readback:
    """Device -> pinned host by kernel into a buffer reused per size; returns a CPU view valid
    until the next read of the same size (the caller uses it at once)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bufs: dict[tuple, Tensor] = {}

    def read(self, src: Tensor) -> Tensor:
        key = (tuple(src.shape), src.dtype)
        host = self.bufs.get(key)
        if host is None:
            host = self.bufs[key] = torch.empty(src.shape, dtype=src.dtype).pin_memory()
        to_host(src, host)
        torch.cuda.current_stream(self.device).synchronize()
        return host
