import math

import pytest
import torch

from djinn.inspect import tensors
from djinn.inspect.tensors import (DTYPES, SliceError, dtype_from_name, dtype_name,
                                   format_summary_line, from_bytes, iter_chunks, parse_slice,
                                   summarize, to_bytes)

NAN, INF = float("nan"), float("inf")


def test_dtype_names_roundtrip():
    for name, dt in DTYPES.items():
        assert dtype_name(dt) == name and dtype_from_name(name) is dt
    assert len(DTYPES) == 10
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        dtype_from_name("float8")


def _reference(t):
    f = t.float().flatten()
    fin = f[torch.isfinite(f)]
    return {"min": fin.min().item(), "max": fin.max().item(), "mean": fin.mean().item(),
            "std": fin.std().item(), "l2_norm": fin.norm().item(),
            "nan_count": int(torch.isnan(f).sum()), "inf_count": int(torch.isinf(f).sum())}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_summary_matches_torch_with_nan_inf(dtype):
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(4, 257, generator=g) * 3).to(dtype)
    t[0, 3] = t[1, 7] = t[3, 0] = NAN
    t[2, 5], t[2, 6] = INF, -INF
    s = summarize(t)
    assert s["dtype"] == dtype_name(dtype) and s["shape"] == [4, 257] and s["numel"] == 4 * 257
    ref = _reference(t)
    assert s["nan_count"] == 3 and s["inf_count"] == 2
    for k in ("min", "max", "mean", "std", "l2_norm"):
        assert math.isclose(s[k], ref[k], rel_tol=1e-5, abs_tol=1e-6), k
    assert isinstance(s["nan_count"], int) and isinstance(s["min"], float)


def test_summary_all_nonfinite_and_empty():
    s = summarize(torch.tensor([NAN, INF, -INF]))
    assert all(math.isnan(s[k]) for k in ("min", "max", "mean", "std"))
    assert s["l2_norm"] == 0.0 and s["nan_count"] == 1 and s["inf_count"] == 2
    e = summarize(torch.empty(0, 5, dtype=torch.bfloat16))
    assert e["numel"] == 0 and e["shape"] == [0, 5] and e["dtype"] == "bfloat16"
    assert math.isnan(e["mean"]) and e["nan_count"] == e["inf_count"] == 0


def test_summary_integers_bool_scalar():
    s = summarize(torch.arange(10, dtype=torch.int32))
    assert (s["min"], s["max"], s["mean"]) == (0.0, 9.0, 4.5) and s["dtype"] == "int32"
    assert math.isclose(s["std"], torch.arange(10.0).std().item(), rel_tol=1e-6)
    b = summarize(torch.tensor([True, False, True, True]))
    assert b["mean"] == 0.75 and b["max"] == 1.0 and b["dtype"] == "bool"
    z = summarize(torch.tensor(2.5))
    assert z["shape"] == [] and z["numel"] == 1 and z["mean"] == 2.5 and math.isnan(z["std"])


def test_summary_large_counts_exact():
    t = torch.full(((1 << 24) + 2,), NAN)  # counts past float32's 2**24 integer range
    t[0] = 1.0
    s = summarize(t)
    assert s["nan_count"] == (1 << 24) + 1 and s["mean"] == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int32])
def test_summary_in_chunks_equals_one_pass(dtype, monkeypatch):
    g = torch.Generator().manual_seed(1)
    t = (torch.randn(7, 1001, generator=g) * 4 + 100).to(dtype)   # an offset mean: no cancellation
    if t.is_floating_point():
        t[0, :1500 // 7] = NAN  # a whole chunk with nothing finite, below
        t[3, 9], t[6, 1000] = INF, -INF
        t[0, :1000] = NAN
    whole = summarize(t)
    monkeypatch.setattr(tensors, "SUMMARY_CHUNK", 997)
    parts = summarize(t)
    f = t.double().flatten()
    fin = f[torch.isfinite(f)]   # the exact answer, in float64
    exact = {"min": fin.min(), "max": fin.max(), "mean": fin.mean(), "std": fin.std(), "l2_norm": fin.norm()}
    for k in ("min", "max", "mean", "std", "l2_norm"):
        # one float32 pass over 7000 values is itself only good to a few 1e-6 (l2_norm)
        assert math.isclose(parts[k], whole[k], rel_tol=1e-5), (k, parts[k], whole[k])
        assert math.isclose(parts[k], exact[k].item(), rel_tol=1e-6), (k, parts[k], exact[k])
    assert (parts["nan_count"], parts["inf_count"]) == (whole["nan_count"], whole["inf_count"])


def test_summary_temporaries_are_bounded(monkeypatch):
    seen = []
    real = tensors._chunk_stats
    monkeypatch.setattr(tensors, "SUMMARY_CHUNK", 1000)
    monkeypatch.setattr(tensors, "_chunk_stats", lambda c, acc: seen.append(c.numel()) or real(c, acc))
    s = summarize(torch.ones(5, 999, dtype=torch.bfloat16).transpose(0, 1))  # non-contiguous too
    assert max(seen) == 1000 and sum(seen) == 4995 and s["mean"] == 1.0 and s["std"] == 0.0


def test_format_summary_line():
    s = {"dtype": "bfloat16", "shape": [1, 2048, 5120], "numel": 2048 * 5120, "min": -5.1234,
         "max": 6.3, "mean": 0.00123456, "std": 1.02, "l2_norm": 4123.0, "nan_count": 0,
         "inf_count": 0}
    assert format_summary_line(s) == ("bf16[1, 2048, 5120] μ=0.001235 σ=1.02 min=-5.123 "
                                      "max=6.3 ‖x‖=4123 nan=0 inf=0")
    line = format_summary_line(summarize(torch.arange(17, dtype=torch.int64)))
    assert line.startswith("i64[17] μ=8 ")       # past 16 elements: statistics
    assert format_summary_line(summarize(torch.tensor([1, 2], dtype=torch.int64))) == "i64[2] [1, 2]"
    assert format_summary_line(summarize(torch.empty(0))) == "f32[0] empty"
    # (small tensors' values: tests/test_small_results.py)


# ----------------------------------------------------------------------------- slicing

def test_parse_slice():
    x = torch.arange(4 * 256 * 3).reshape(4, 256, 3)
    assert parse_slice(x.shape, []) == (slice(None),) * 3
    sl = parse_slice(x.shape, [(1, 3, 0), (-10, -2, 3)])
    assert torch.equal(x[sl], x[1:3, -10:-2:3])
    assert sl[2] == slice(None)
    assert torch.equal(x[parse_slice(x.shape, [(0, 0, 0), (0, 256, 2)])], x[:, ::2])
    assert x[parse_slice(x.shape, [(2, 2, 1)])].shape[0] == 0  # python semantics: empty
    assert parse_slice([5], [(-5, 5, 1)]) == (slice(-5, 5, 1),)


@pytest.mark.parametrize("dims,needle", [
    ([(0, 0, 0), (300, 0, 1)], "dim 1: start 300 out of range for size 256"),
    ([(0, 5, 1)], "dim 0: stop 5 out of range for size 4"),
    ([(-5, 2, 1)], "dim 0: start -5 out of range for size 4"),
    ([(0, 2, -1)], "dim 0: step -1 must be >= 1"),
    ([(0, 0, 0)] * 4, "4 slice dims given but the tensor has 3"),
])
def test_parse_slice_errors(dims, needle):
    with pytest.raises(SliceError, match=needle.replace("(", r"\(")):
        parse_slice([4, 256, 3], dims)
    assert issubclass(SliceError, IndexError)


# ----------------------------------------------------------------------------- bytes

def test_bf16_bytes_roundtrip_exact():
    t = torch.tensor([1.5, -0.0078125, 3.0e38], dtype=torch.bfloat16)
    data = to_bytes(t)
    assert len(data) == 6 and data[:2] == (0x3FC0).to_bytes(2, "little")
    back = from_bytes(data, "bfloat16", [3])
    assert back.dtype == torch.bfloat16 and torch.equal(back.view(torch.int16), t.view(torch.int16))
    nan = torch.tensor([NAN, INF], dtype=torch.bfloat16)
    assert to_bytes(from_bytes(to_bytes(nan), "bfloat16", [2])) == to_bytes(nan)


@pytest.mark.parametrize("name", list(DTYPES))
def test_bytes_roundtrip_all_dtypes(name):
    t = (torch.arange(24) % 7 - 3).to(DTYPES[name]).reshape(2, 3, 4)
    strided = t.transpose(0, 2)  # non-contiguous input
    data = to_bytes(strided)
    assert len(data) == 24 * t.element_size()
    assert torch.equal(from_bytes(data, name, [4, 3, 2]), strided.contiguous())


def test_to_bytes_little_endian_and_scalar():
    assert to_bytes(torch.tensor(1, dtype=torch.int32)) == b"\x01\x00\x00\x00"
    assert to_bytes(torch.tensor([True, False])) == b"\x01\x00"
    assert to_bytes(torch.empty(0, 3)) == b""
    assert from_bytes(b"", "float32", [0, 3]).shape == (0, 3)


def test_from_bytes_errors():
    with pytest.raises(ValueError, match="needs 12 bytes, got 10"):
        from_bytes(b"\0" * 10, "float32", [3])
    with pytest.raises(ValueError, match="unknown dtype"):
        from_bytes(b"\0" * 4, "complex64", [1])
    out = from_bytes(b"\0\0\x80\x3f", "float32", [])
    out += 1  # writable, independent of the input buffer
    assert out.item() == 2.0


def test_iter_chunks():
    data = bytes(range(256)) * 10
    chunks = list(iter_chunks(data, 1000))
    assert [o for o, _ in chunks] == [0, 1000, 2000] and b"".join(c for _, c in chunks) == data
    assert all(isinstance(c, memoryview) for _, c in chunks)
    big = b"\0" * (3 << 20)
    assert [len(c) for _, c in iter_chunks(big, 8 << 20)] == [1 << 20] * 3  # capped at 1 MiB
    assert len(list(iter_chunks(b"abc", -5))) == 3  # at least 1 byte
    assert [len(c) for _, c in iter_chunks(big, 0)] == [1 << 20] * 3  # 0: the default
    [(off, empty)] = list(iter_chunks(b"", 100))
    assert off == 0 and len(empty) == 0
