"""Tensor helpers for paused activations: dtype names, summaries, slicing, raw bytes."""
from __future__ import annotations

import math
import sys
from typing import Iterator

import torch

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
    "float64": torch.float64, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
    "int64": torch.int64, "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
_SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8",
          "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "bool": "bool"}
MAX_CHUNK = 1 << 20  # 1 MiB per streamed chunk
SUMMARY_CHUNK = 1 << 24  # elements a summary reduces at once (16M: 64 MB per float32 temporary)


def dtype_name(t_dtype: torch.dtype) -> str:
    """Wire name of a dtype; unlisted dtypes fall back to torch's own name (display only)."""
    return _NAMES.get(t_dtype) or str(t_dtype).removeprefix("torch.")


def dtype_from_name(s: str) -> torch.dtype:
    try:
        return DTYPES[s]
    except KeyError:
        raise ValueError(f"unknown dtype {s!r}; expected one of {', '.join(DTYPES)}") from None


def _chunk_stats(c: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """[finite count, sum, M2 about the chunk's own mean, min, max, l2, nan, inf] of a 1-D chunk."""
    f = c if c.dtype == torch.float64 else c.float()
    isnan, isinf = torch.isnan(f), torch.isinf(f)
    finite = ~(isnan | isinf)
    n = finite.sum()
    zero = torch.zeros((), dtype=f.dtype, device=f.device)
    # torch.where instead of boolean masking: masking needs the count on the host (a sync).
    fz = torch.where(finite, f, zero)
    s = fz.sum()
    m2 = torch.where(finite, f - s / n, zero).square().sum()  # two-pass within the chunk: no cancellation
    lo, hi = torch.where(finite, f, math.inf).amin(), torch.where(finite, f, -math.inf).amax()
    return torch.stack([x.to(acc) for x in (n, s, m2, lo, hi, torch.linalg.vector_norm(fz),
                                             isnan.sum(), isinf.sum())])


def summarize(t: torch.Tensor) -> dict:
    """Statistics over the finite values, computed on t's device; one device->host copy.

    Values are taken in float32 (float64 stays float64); std is the sample std (n-1), like
    torch.std. Statistics with no finite values are NaN (l2_norm is 0.0). Reduced in chunks of
    SUMMARY_CHUNK elements, so the float32 temporaries stay bounded (a 2048 x 32000 logits
    tensor would otherwise need several 262 MB copies); chunks combine in float64.
    """
    out = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "numel": t.numel()}
    if t.numel() == 0:
        nan = float("nan")
        return {**out, "min": nan, "max": nan, "mean": nan, "std": nan, "l2_norm": 0.0,
                "nan_count": 0, "inf_count": 0}
    with torch.no_grad():
        # float64 keeps counts exact past 2**24; MPS has no float64.
        acc = torch.float32 if t.device.type == "mps" else torch.float64
        parts = torch.stack([_chunk_stats(c, acc) for c in t.detach().reshape(-1).split(SUMMARY_CHUNK)])
        n, sums, m2, lo, hi, l2, nans, infs = parts.unbind(1)
        N = n.sum()
        mean = sums.sum() / N                                   # 0/0 = nan when nothing is finite
        # Chan et al.: M2 = sum of the chunks' M2 + n_c (mean_c - mean)^2 (empty chunks add 0)
        m2 = m2.sum() + torch.where(n > 0, n * (sums / n - mean).square(), 0).sum()
        nan = torch.full((), float("nan"), dtype=acc, device=t.device)
        std = torch.where(N > 1, (m2 / (N - 1)).sqrt(), nan)
        lo, hi = torch.where(N > 0, lo.amin(), nan), torch.where(N > 0, hi.amax(), nan)
        vals = torch.stack([lo, hi, mean, std, l2.square().sum().sqrt(), nans.sum(),
                            infs.sum()]).tolist()  # the only device->host transfer
    keys = ("min", "max", "mean", "std", "l2_norm", "nan_count", "inf_count")
    out.update(zip(keys, vals))
    out["nan_count"], out["inf_count"] = int(vals[5]), int(vals[6])
    return out


class SliceError(IndexError):
    pass


def parse_slice(shape, dims: list[tuple[int, int, int]]) -> tuple[slice, ...]:
    """One (start, stop, step) per leading dim, Python semantics except that stop 0 means
    "to the end" (a protobuf field cannot be None), so (0, 0, 0) is the whole dim and
    (-1, 0, 0) the last element. Step 0 means 1. Missing trailing dims are whole.
    Bounds must lie in [-size, size].
    """
    shape = list(shape)
    if len(dims) > len(shape):
        raise SliceError(f"{len(dims)} slice dims given but the tensor has {len(shape)} "
                         f"(shape {shape})")
    out = []
    for d, (start, stop, step) in enumerate(dims):
        if start == stop == step == 0:
            out.append(slice(None))
            continue
        step = step or 1
        if step < 1:
            raise SliceError(f"dim {d}: step {step} must be >= 1")
        for what, v in (("start", start), ("stop", stop)):
            if not -shape[d] <= v <= shape[d]:
                raise SliceError(f"dim {d}: {what} {v} out of range for size {shape[d]}")
        out.append(slice(start, stop if stop != 0 else None, step))
    return tuple(out) + (slice(None),) * (len(shape) - len(dims))


def to_bytes(t: torch.Tensor) -> bytes:
    """Contiguous little-endian bytes in t's own dtype (bf16 included: 2 bytes an element)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8)  # reinterpret, any dtype: no numpy, so bf16 works
    if sys.byteorder == "big" and flat.element_size() > 1:
        raw = raw.view(-1, flat.element_size()).flip(1).reshape(-1)
    return raw.numpy().tobytes()


def from_bytes(data: bytes, dtype_name: str, shape: list[int]) -> torch.Tensor:
    """CPU tensor from little-endian bytes; the byte count must match the shape exactly."""
    dtype, shape = dtype_from_name(dtype_name), [int(s) for s in shape]
    if any(s < 0 for s in shape):
        raise ValueError(f"negative size in shape {shape}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = math.prod(shape) * itemsize
    if len(data) != expected:
        raise ValueError(f"{dtype_name}{shape} needs {expected} bytes, got {len(data)}")
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else \
        torch.empty(0, dtype=torch.uint8)
    if sys.byteorder == "big" and itemsize > 1:
        raw = raw.view(-1, itemsize).flip(1).reshape(-1)
    return raw.view(dtype).reshape(shape)


def iter_chunks(data: bytes, chunk_bytes: int) -> Iterator[tuple[int, memoryview]]:
    """(offset, view) pieces of min(chunk_bytes, 1 MiB) bytes (0 means 1 MiB, the proto default;
    negatives mean 1). Empty data yields one empty chunk at offset 0."""
    size = max(1, min(int(chunk_bytes or MAX_CHUNK), MAX_CHUNK))  # 0 = unset: the default
    mv = memoryview(data)
    if not len(mv):
        yield 0, mv
    for off in range(0, len(mv), size):
        yield off, mv[off:off + size]


def format_summary_line(summary: dict) -> str:
    """E.g. 'bf16[1, 2048, 5120] μ=0.0012 σ=1.02 min=-5.1 max=6.3 ‖x‖=4.1e+03 nan=0 inf=0'."""
    dt = _SHORT.get(summary["dtype"], summary["dtype"])
    g = lambda k: f"{summary[k]:.4g}"  # noqa: E731
    return (f"{dt}{list(summary['shape'])} μ={g('mean')} σ={g('std')} min={g('min')} "
            f"max={g('max')} ‖x‖={g('l2_norm')} nan={summary['nan_count']} "
            f"inf={summary['inf_count']}")
