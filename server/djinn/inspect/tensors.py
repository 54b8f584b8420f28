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


MAX_VALUES = 16  # a tensor with at most this many elements carries (and prints) its values


def summarize(t: torch.Tensor) -> dict:
    """Statistics over the finite values, computed on t's device; one device->host copy.

    Values are taken in float32 (float64 stays float64); std is the sample std (n-1), like
    torch.std. Statistics with no finite values are NaN (l2_norm is 0.0). Reduced in chunks of
    SUMMARY_CHUNK elements, so the float32 temporaries stay bounded (a 2048 x 32000 logits
    tensor would otherwise need several 262 MB copies); chunks combine in float64.

    A tensor of 1..MAX_VALUES elements also gets `values`: every element in C order (bool as
    0/1, integers as exact Python ints, floats as the float64 of the value), fetched in the same
    copy as the statistics. `values` is empty otherwise.
    """
    out = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "numel": t.numel(), "values": []}
    if t.numel() == 0:
        nan = float("nan")
        return {**out, "min": nan, "max": nan, "mean": nan, "std": nan, "l2_norm": 0.0,
                "nan_count": 0, "inf_count": 0}
    with torch.no_grad():
        # float64 keeps counts exact past 2**24; MPS has no float64.
        acc = torch.float32 if t.device.type == "mps" else torch.float64
        flat = t.detach().reshape(-1)
        parts = torch.stack([_chunk_stats(c, acc) for c in flat.split(SUMMARY_CHUNK)])
        n, sums, m2, lo, hi, l2, nans, infs = parts.unbind(1)
        N = n.sum()
        mean = sums.sum() / N                                   # 0/0 = nan when nothing is finite
        # Chan et al.: M2 = sum of the chunks' M2 + n_c (mean_c - mean)^2 (empty chunks add 0)
        m2 = m2.sum() + torch.where(n > 0, n * (sums / n - mean).square(), 0).sum()
        nan = torch.full((), float("nan"), dtype=acc, device=t.device)
        std = torch.where(N > 1, (m2 / (N - 1)).sqrt(), nan)
        lo, hi = torch.where(N > 0, lo.amin(), nan), torch.where(N > 0, hi.amax(), nan)
        stats = torch.stack([lo, hi, mean, std, l2.square().sum().sqrt(), nans.sum(), infs.sum()])
        small = flat.numel() <= MAX_VALUES
        if small and acc == torch.float64:
            vals, out["values"] = _with_values(stats, flat)    # still the only transfer
        else:
            vals = stats.tolist()  # the only device->host transfer
            if small:   # MPS: float32 would round integers past 2**24, so the values copy apart
                out["values"] = flat.tolist() if flat.dtype != torch.bool else [int(v) for v in flat.tolist()]
    keys = ("min", "max", "mean", "std", "l2_norm", "nan_count", "inf_count")
    out.update(zip(keys, vals))
    out["nan_count"], out["inf_count"] = int(vals[5]), int(vals[6])
    return out


def _with_values(stats: torch.Tensor, flat: torch.Tensor) -> tuple[list, list]:
    """The statistics and the elements of a small tensor in one float64 copy. int64 goes as two
    exact halves (high 32 bits signed, low 32 unsigned), since float64 holds only 53 bits."""
    k = stats.numel()
    if flat.dtype == torch.int64:
        host = torch.cat([stats, (flat >> 32).double(), (flat & 0xFFFFFFFF).double()]).tolist()
        n = flat.numel()
        return host[:k], [(int(h) << 32) + int(lo) for h, lo in zip(host[k:k + n], host[k + n:])]
    host = torch.cat([stats, flat.double()]).tolist()
    if flat.is_floating_point():
        return host[:k], host[k:]
    return host[:k], [int(v) for v in host[k:]]   # bool (0/1) and the other integers: exact


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


def format_value(v, dtype: str = "float32") -> str:
    """One element for display: bool as true/false, integers exactly, floats with 6 significant
    digits (nan, inf, -inf spelled so)."""
    if dtype == "bool":
        return "true" if v else "false"
    if not dtype.startswith(("float", "bfloat")) and float(v).is_integer():
        return str(int(v))
    return f"{float(v):.6g}"


def format_values(values, shape, dtype: str = "float32") -> str:
    """Elements in C order as nested lists of the tensor's shape, like Python's repr of
    t.tolist(): [1, 2] for [2], [[1, 2, 3], [4, 5, 6]] for [2, 3]; a 0-d tensor is its value."""
    items = [format_value(v, dtype) for v in values]
    for size in reversed(list(shape)[1:]):
        items = ["[" + ", ".join(items[i:i + size]) + "]" for i in range(0, len(items), size)]
    return ("[" + ", ".join(items) + "]") if len(shape) else items[0]


def format_summary_line(summary: dict) -> str:
    """One display line: 'dtype[shape]' then the values of a small tensor, 'empty', or statistics.

    'i64[1] [457]', 'f32[2, 2] [[1, 0.5], [nan, -inf]]', 'f32[2, 0, 32] empty',
    'bf16[1, 2048, 5120] μ=0.0012 σ=1.02 min=-5.1 max=6.3 ‖x‖=4.1e+03 nan=0 inf=0'.
    """
    dt = _SHORT.get(summary["dtype"], summary["dtype"])
    head = f"{dt}{list(summary['shape'])}"
    numel = summary.get("numel", math.prod(summary["shape"]))
    if numel == 0:
        return f"{head} empty"
    values = summary.get("values") or []
    if 0 < numel <= MAX_VALUES and len(values) == numel:
        return f"{head} {format_values(values, summary['shape'], summary['dtype'])}"
    g = lambda k: f"{summary[k]:.4g}"  # noqa: E731
    return (f"{head} μ={g('mean')} σ={g('std')} min={g('min')} "
            f"max={g('max')} ‖x‖={g('l2_norm')} nan={summary['nan_count']} "
            f"inf={summary['inf_count']}")
