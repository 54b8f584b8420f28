"""Row-wise decode kernels that replace chains of small PyTorch kernels on CUDA (Triton).

A decode block has a few rows, so a norm or RoPE in PyTorch is several launches of ~2-10 us
each over a few KB; these do each job in one launch, one program per row (or per row and head):

  rms_norm(x, w, eps[, residual])  ->  y (and h = x + residual when given): HF's order, fp32
                                     statistics, the normalised row rounded, then times the weight
  rope_qkv(lin, cos, sin, meta, kv_anchor, layer) -> the q/k/v rows with RoPE, and each row's
                                     K/V written into its own KV buffer at its position (the
                                     block attention's table, kernels/decode_attention.py; for a
                                     prefill, one row per token of one session)
  silu_mul(gate_up)               ->  silu(gate) * up

Every row's numbers depend only on that row, so blocks of any fill agree bit for bit. The
engine uses them only where block attention runs (CUDA with Triton), in decode blocks and in
prefills (runtime/pieces.py); elsewhere PyTorch's own.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .decode_attention import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _rms_norm(x, res, h_out, w, y_out, eps, N: tl.constexpr, BLOCK: tl.constexpr, ADD: tl.constexpr):
        r = tl.program_id(0)
        c = tl.arange(0, BLOCK)
        live = c < N
        xv = tl.load(x + r * N + c, mask=live, other=0.0)
        if ADD:   # h = x + residual, rounded to the row's dtype as PyTorch's add would
            xv = (xv.to(tl.float32) + tl.load(res + r * N + c, mask=live, other=0.0).to(tl.float32)).to(xv.dtype)
            tl.store(h_out + r * N + c, xv, mask=live)
        f = xv.to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(f * f, axis=0) / N + eps)
        y = (f * inv).to(xv.dtype).to(tl.float32) * tl.load(w + c, mask=live, other=0.0).to(tl.float32)
        tl.store(y_out + r * N + c, y.to(y_out.dtype.element_ty), mask=live)

    @triton.jit(do_not_specialize=["layer", "R"])   # R: a prefill's length; one compile for all
    def _rope_qkv(lin, cos, sin, out, meta, anchor, layer, R, H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr,
                  HB: tl.constexpr, STORE: tl.constexpr):
        b = tl.program_id(0)
        hs = tl.program_id(1) * HB + tl.arange(0, HB)   # heads 0..H-1 queries, H..H+HKV-1 keys, then values
        NH = H + 2 * HKV
        live = hs < NH
        rotated = hs < H + HKV
        half = D // 2
        d = tl.arange(0, D)
        src = lin + (b * NH + hs[:, None]) * D
        x = tl.load(src + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
        # rotate-half RoPE on q and k: x * cos + [-x2, x1] * sin
        other = tl.load(src + tl.where(d < half, d + half, d - half)[None, :], mask=(live & rotated)[:, None],
                        other=0.0).to(tl.float32)
        rot = tl.where((d < half)[None, :], -other, other)
        c = tl.load(cos + b * D + d).to(tl.float32)[None, :]
        sn = tl.load(sin + b * D + d).to(tl.float32)[None, :]
        x = tl.where(rotated[:, None], x * c + rot * sn, x)
        y = x.to(out.dtype.element_ty)
        tl.store(out + (b * NH + hs[:, None]) * D + d[None, :], y, mask=live[:, None])
        if STORE:
            length = tl.load(meta + 3 * R + b)
            if length > 0:              # this row's K and V heads into its own buffer at its position
                off = tl.load(meta + R + b)
                ctx = tl.load(meta + 2 * R + b)
                j = hs - H              # 0..HKV-1: K head j; HKV..2HKV-1: V head j - HKV
                kv = anchor + off + layer * 2 * HKV * ctx * D
                tl.store(kv + (j[:, None] * ctx + length - 1) * D + d[None, :], y, mask=(live & (hs >= H))[:, None])

    @triton.jit
    def _silu_mul(gu, out, I: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0)
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        live = c < I
        g = tl.load(gu + r * 2 * I + c, mask=live, other=0.0).to(tl.float32)
        u = tl.load(gu + r * 2 * I + I + c, mask=live, other=0.0).to(tl.float32)
        # PyTorch rounds silu(g) to the dtype before the product; so does this
        s = (g / (1.0 + tl.exp(-g))).to(gu.dtype.element_ty).to(tl.float32)
        tl.store(out + r * I + c, (s * u).to(out.dtype.element_ty), mask=live)


def rms_norm(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None = None,
             y: Tensor | None = None, h: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """x [R, N] -> RMSNorm(x) (or, with residual, (h = x + residual, RMSNorm(h)))."""
    R, N = x.shape
    y = torch.empty_like(x) if y is None else y
    if residual is not None:
        h = torch.empty_like(x) if h is None else h
    _rms_norm[(R,)](x, residual if residual is not None else x, h if residual is not None else x, weight, y, eps,
                    N=N, BLOCK=triton.next_power_of_2(N), ADD=residual is not None, num_warps=8)
    return (h, y) if residual is not None else y


def rope_qkv(lin: Tensor, cos: Tensor, sin: Tensor, out: Tensor, n_heads: int, n_kv_heads: int,
             meta: Tensor | None = None, anchor: Tensor | None = None, layer: int = 0,
             heads_per_program: int | None = None) -> Tensor:
    """lin [R, (H + 2 Hkv) * Dh] (the fused q/k/v product), cos/sin [R, Dh] -> out [R, H + 2 Hkv, Dh];
    with meta/anchor (a BlockAttention's) also each row's K/V into its KV buffer at its position."""
    R, D = cos.shape
    store = meta is not None
    # a decode block (few rows): one head per program, many programs; a prefill (thousands of
    # rows): 16 heads per program, not 2016 x 120 programs of 128 elements (same numbers either way)
    hb = heads_per_program or (1 if R <= 64 else 16)   # (a power of 2)
    _rope_qkv[(R, triton.cdiv(n_heads + 2 * n_kv_heads, hb))](lin, cos, sin, out, meta if store else cos,
                                                              anchor if store else out, layer, R, H=n_heads,
                                                              HKV=n_kv_heads, D=D, HB=hb, STORE=store)
    return out


def silu_mul(gate_up: Tensor, out: Tensor | None = None) -> Tensor:
    """gate_up [R, 2 I] (gate, then up) -> silu(gate) * up [R, I]."""
    R, I2 = gate_up.shape
    out = gate_up.new_empty(R, I2 // 2) if out is None else out
    block = 1024
    _silu_mul[(R, triton.cdiv(I2 // 2, block))](gate_up, out, I=I2 // 2, BLOCK=block)
    return out
