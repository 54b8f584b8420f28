"""Decode attention for a whole block of sessions in three kernels, each session in its own KV.

A decode block (runtime/pieces.py) holds up to `rows` sessions, each with its own static KV
buffer [n_layers, 2, Hkv, context, Dh] somewhere on the device. Attending row by row from
Python costs four launches and ~50 us of CPU per session and layer; here one launch covers the
block. The kernels find each row's buffer through a small table on the device (`meta`: the
row's position for RoPE, its KV's offset in elements from a fixed anchor tensor, its context,
and its length after this step; length 0 marks padding), so a CUDA graph captured once replays
for any sessions: only the table changes.

  store:   each row's new K/V (from the block's q/k/v rows) into its buffer at pos
  partial: per (row, query head, chunk of CHUNK positions) a softmax-weighted partial sum,
           in fp32 (flash-decoding); a fixed grid of programs per head strides through the
           block's live (row, chunk) pairs, so padding and chunks past a row's length cost
           nothing and many short rows spread over many programs
  reduce:  per (row, query head) the partials combined in chunk order -> the row's output

Every number a row gets depends only on its own queries, keys, values and length: never on
which other sessions share the block or how many there are, so batched and alone agree bit for
bit. Grouped-query attention reads the shared KV head in place (query head h uses KV head
h // (H / Hkv)). Off CUDA, or without Triton, the engine attends row by row in PyTorch instead.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds: the engine's PyTorch path is used
    triton = None


def _interpreter_loop_bounds() -> None:
    """Triton's CPU interpreter holds a scalar as a 1-element array, and its int() of one (a
    loop bound read from memory) fails under numpy 2: the kernels' data-dependent loops need it."""
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "djinn", False):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
    patched.djinn = True
    interpreter._patch_lang_tensor = patched


if triton is not None and os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_loop_bounds()

# Chosen on the H200 with bench/attention_kernels.py (bench/NOTES.md): one session 31.5 us per
# layer at 64 against 36-47 at 32; 16 sessions 250 against 269 us.
CHUNK = 64     # positions per partial (the same for every row, whoever shares the block)
BLOCK_T = 16   # positions per step inside a chunk
WARPS = 1
EVICT = ""     # or "evict_first": K/V are read once per step


def available(device: torch.device) -> bool:
    """True where these kernels run: CUDA with Triton (or Triton's CPU interpreter, for tests)."""
    if triton is None or os.environ.get("DJINN_TRITON_ATTENTION", "1") == "0":
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:
    @triton.jit(do_not_specialize=["layer"])   # one compiled kernel for every layer
    def _store_kv(qkv, meta, anchor, layer, R, H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        length = tl.load(meta + 3 * R + b)
        if length > 0:
            off = tl.load(meta + R + b)
            ctx = tl.load(meta + 2 * R + b)
            d = tl.arange(0, D)
            row = qkv + b * (H + 2 * HKV) * D
            kv = anchor + off + layer * 2 * HKV * ctx * D
            pos = length - 1
            tl.store(kv + (h * ctx + pos) * D + d, tl.load(row + (H + h) * D + d))
            tl.store(kv + ((HKV + h) * ctx + pos) * D + d, tl.load(row + (H + HKV + h) * D + d))

    @triton.jit(do_not_specialize=["layer"])
    def _attend_partial(qkv, meta, anchor, layer, m_out, l_out, acc_out, scale, R: tl.constexpr, RP: tl.constexpr,
                        G: tl.constexpr, H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, NS: tl.constexpr,
                        CHUNK_: tl.constexpr, BT: tl.constexpr, EVICT: tl.constexpr):
        # A fixed grid of G programs per query head strides through the block's live (row, chunk)
        # pairs, numbered row by row from the table's lengths (padding rows have none): any fill
        # spreads over the programs, and a graph captured once serves every fill. A pair's numbers
        # do not depend on which program computes it.
        h = tl.program_id(0)
        g = tl.program_id(1)
        kvh = h // (H // HKV)
        d = tl.arange(0, D)
        rs = tl.arange(0, RP)
        lengths = tl.load(meta + 3 * R + rs, mask=rs < R, other=0)
        chunks = (lengths + CHUNK_ - 1) // CHUNK_
        ends = tl.cumsum(chunks, axis=0)           # row b's pairs: ends[b] - chunks[b] .. ends[b] - 1
        total = tl.sum(chunks, axis=0).to(tl.int32)
        for w in range(g, total, G):
            b = tl.sum((ends <= w).to(tl.int32), axis=0)
            sp = w - tl.sum(tl.where(rs == b, ends - chunks, 0), axis=0)
            start = sp * CHUNK_
            length = tl.sum(tl.where(rs == b, lengths, 0), axis=0)
            off = tl.load(meta + R + b)
            ctx = tl.load(meta + 2 * R + b)
            q = tl.load(qkv + (b * (H + 2 * HKV) + h) * D + d).to(tl.float32) * scale
            k_base = anchor + off + layer * 2 * HKV * ctx * D + kvh * ctx * D
            v_base = k_base + HKV * ctx * D
            m = tl.full([], float("-inf"), tl.float32)
            l = tl.full([], 0.0, tl.float32)
            acc = tl.zeros([D], dtype=tl.float32)
            # steps past the row's length would only multiply by exp(0) = 1 and add 0: skipped
            for t0 in range(0, tl.minimum(length - start, CHUNK_), BT):
                t = start + t0 + tl.arange(0, BT)
                valid = t < length
                k = tl.load(k_base + t[:, None] * D + d[None, :], mask=valid[:, None], other=0.0, eviction_policy=EVICT)
                v = tl.load(v_base + t[:, None] * D + d[None, :], mask=valid[:, None], other=0.0, eviction_policy=EVICT)
                s = tl.where(valid, tl.sum(k.to(tl.float32) * q[None, :], axis=1), float("-inf"))
                m_new = tl.maximum(m, tl.max(s, axis=0))
                alpha = tl.exp(m - m_new)
                p = tl.exp(s - m_new)
                acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
                l = l * alpha + tl.sum(p, axis=0)
                m = m_new
            i = (b * H + h) * NS + sp
            tl.store(m_out + i, m)
            tl.store(l_out + i, l)
            tl.store(acc_out + i * D + d, acc)

    @triton.jit
    def _attend_reduce(meta, m_in, l_in, acc_in, out, R, H: tl.constexpr, D: tl.constexpr,
                       NS: tl.constexpr, NSP: tl.constexpr, CHUNK_: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        length = tl.load(meta + 3 * R + b)
        n = (length + CHUNK_ - 1) // CHUNK_
        sps = tl.arange(0, NSP)
        live = sps < n
        i = (b * H + h) * NS + sps
        d = tl.arange(0, D)
        ms = tl.load(m_in + i, mask=live, other=float("-inf"))
        top = tl.max(ms, axis=0)
        w = tl.where(live, tl.exp(ms - top), 0.0)
        total = tl.sum(tl.load(l_in + i, mask=live, other=0.0) * w, axis=0)
        accs = tl.load(acc_in + i[:, None] * D + d[None, :], mask=live[:, None], other=0.0)
        o = tl.sum(accs * w[:, None], axis=0) / total
        o = tl.where(length > 0, o, 0.0)   # padding rows: zeros, not 0/0
        tl.store(out + (b * H + h) * D + d, o.to(out.dtype.element_ty))


class BlockAttention:
    """The three launches for one block of `rows` rows, over static buffers (graph-safe).

    meta: [4, rows] int64 on the device: position, KV offset from `anchor` in elements, context,
    length (pos + 1; 0 = padding). The caller fills it (see `meta_rows`) before each call."""

    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, rows: int, max_context: int,
                 device: torch.device, dtype: torch.dtype, chunk: int = CHUNK, block_t: int = BLOCK_T, warps: int = WARPS,
                 evict: str = EVICT, programs: int | None = None):
        assert n_heads % n_kv_heads == 0 and head_dim & (head_dim - 1) == 0, "head_dim must be a power of 2"
        self.H, self.Hkv, self.D, self.rows = n_heads, n_kv_heads, head_dim, rows
        self.dtype = dtype
        self.chunk, self.block_t, self.warps, self.evict = chunk, min(block_t, chunk), warps, evict
        self.ns = triton.cdiv(max_context, chunk)
        # programs per query head for the partials: enough for one session's every chunk, or one
        # chunk of every row (50 sessions at short contexts), whichever is more
        self.programs = programs or max(self.ns, rows)
        f32 = dict(dtype=torch.float32, device=device)
        self.m = torch.zeros(rows, n_heads, self.ns, **f32)
        self.l = torch.zeros(rows, n_heads, self.ns, **f32)
        self.acc = torch.zeros(rows, n_heads, self.ns, head_dim, **f32)
        self.anchor = torch.zeros(1, dtype=dtype, device=device)   # offsets are counted from here
        self.meta = torch.zeros(4, rows, dtype=torch.long, device=device)
        self.scale = head_dim ** -0.5

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.m, self.l, self.acc, self.anchor, self.meta))

    def meta_rows(self, rows: list[tuple[Tensor, int]]) -> list[list[int]]:
        """The table's four rows for (kv, pos) per session: kv is the session's whole static
        buffer [n_layers, 2, Hkv, context, Dh], contiguous, of this dtype, on this device."""
        size = self.anchor.element_size()
        out = [[0] * self.rows for _ in range(4)]
        for i, (kv, pos) in enumerate(rows):
            if not (kv.is_contiguous() and kv.dtype == self.dtype and kv.device == self.anchor.device
                    and kv.dim() == 5 and kv.shape[2] == self.Hkv and kv.shape[4] == self.D and 0 <= pos < kv.shape[3]):
                raise ValueError(f"a KV buffer of shape {list(kv.shape)} / {kv.dtype} cannot be attended in a block")
            delta = kv.data_ptr() - self.anchor.data_ptr()
            out[0][i], out[1][i], out[2][i], out[3][i] = pos, delta // size, kv.shape[3], pos + 1
        return out

    def __call__(self, layer: int, qkv: Tensor, out: Tensor, store: bool = True) -> None:
        """qkv: [rows, H + 2 Hkv, Dh] (RoPE applied), out: [rows, H * Dh]; reads self.meta.
        store=False: the rows' K/V are already in their buffers (kernels/rowwise.rope_qkv)."""
        R, H, Hkv, D = self.rows, self.H, self.Hkv, self.D
        if store:
            _store_kv[(R, Hkv)](qkv, self.meta, self.anchor, layer, R, H=H, HKV=Hkv, D=D)
        _attend_partial[(H, self.programs)](qkv, self.meta, self.anchor, layer, self.m, self.l, self.acc, self.scale, R,
                                            RP=triton.next_power_of_2(R), G=self.programs, H=H, HKV=Hkv, D=D, NS=self.ns,
                                            CHUNK_=self.chunk, BT=self.block_t, EVICT=self.evict, num_warps=self.warps)
        _attend_reduce[(R, H)](self.meta, self.m, self.l, self.acc, out, R, H=H, D=D, NS=self.ns,
                               NSP=triton.next_power_of_2(self.ns), CHUNK_=self.chunk)
