"""The KV-free parts of a decode piece, for a block of `rows` rows, eager or as CUDA graphs.

A decode step of a batch is row-wise everywhere but in attention: norms, projections, RoPE
(each row its own position), the MLP and the head treat every row alone. Those parts run here
on a block of exactly `rows` rows (sessions fill rows 0..B-1; the rest is padding), so a
session's numbers never depend on how many others share its block: the matrix kernels see the
same shapes whether one session decodes or sixteen. Attention reads each session's own KV
buffer: on CUDA one set of kernels for the whole block (kernels/decode_attention.py), finding
each row's buffer through a small table; elsewhere row by row in PyTorch.

On CUDA every part is captured once at start-up as a graph over static registers, one graph per
layer and part (a stop point is a graph boundary): norm, q/k/v, RoPE, attention and o_proj are
one graph, the MLP another, the residual add a third. Inputs that are already in their register
(the previous part's output) are not copied; a part's outputs are views of registers, valid
until the next part of any session runs: the engine copies out what a session keeps when it
leaves the worker (`owns`). The eager path computes the same kernels on the same shapes, so a
graph replays exactly what eager code would compute (tested on CUDA).

A prefill (one session's T prompt rows, runtime/engine.py) runs eagerly through
prefill_attention / prefill_mlp: where block attention runs, the same row-wise Triton kernels
(norm, RoPE + K/V store, silu * up), then SDPA over the session's cached K/V as in PyTorch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import decode_attention, hostcopy, rowwise
from ..model.llama import Llama, attend_decode_row, attention_core, attention_step, qkv_rows


class EagerPieces:
    """The row-wise parts as plain calls; inputs padded to `rows` rows."""

    graphed = False

    def __init__(self, model: Llama, rows: int, cos: Tensor, sin: Tensor):
        self.model, self.rows, self.cos, self.sin = model, rows, cos, sin
        a = model.args
        self.o_width = a.n_heads * a.head_dim
        self.block_attention = None
        self._prefill_meta_key: tuple | None = None
        if decode_attention.available(cos.device):
            self.block_attention = decode_attention.BlockAttention(
                a.n_heads, a.n_kv_heads, a.head_dim, rows, cos.shape[0], cos.device, cos.dtype)

    def gather(self, tensors: list[Tensor], name: str) -> Tensor:
        """The rows of several sessions (each [1, ...]) as one [rows, ...] block."""
        if len(tensors) == self.rows:
            return tensors[0] if self.rows == 1 else torch.cat(tensors)
        pad = tensors[0].new_zeros((self.rows - len(tensors),) + tuple(tensors[0].shape[1:]))
        return torch.cat(tensors + [pad])


    def o_block(self) -> Tensor:
        return torch.zeros(self.rows, self.o_width, dtype=self.cos.dtype, device=self.cos.device)

    def pre(self, layer: int, x: Tensor, pos: list[int]) -> tuple[Tensor, Tensor]:
        """Norm, q/k/v and RoPE of the block's rows; pos: each session's position (padding: 0).
        Returns the rows [rows, H + 2 Hkv, Dh] and the queries scaled by 1/sqrt(Dh) [rows, H, Dh]."""
        L = self.model.layers[layer]
        idx = torch.tensor(pos + [0] * (self.rows - len(pos)), device=self.cos.device)
        return self._pre(L, x, self.cos[idx], self.sin[idx])

    def _pre(self, L, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        qkv = qkv_rows(L.self_attn, L.input_layernorm(x), cos, sin)
        return qkv, qkv[:, :self.model.args.n_heads] * self.model.args.head_dim ** -0.5

    def post(self, layer: int, o: Tensor) -> Tensor:
        return self.model.layers[layer].self_attn.o_proj(o)

    def attention(self, layer: int, x: Tensor, rows: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        """A layer's attention for the block: x [rows, D]; rows: each session's (whole KV buffer,
        position). Writes each session's K/V at its position and returns (the q/k/v rows
        [rows, H + 2 Hkv, Dh], the attention output after o_proj [rows, D])."""
        ba = self.block_attention
        if ba is None:                  # row by row, in PyTorch
            qkv, qs = self.pre(layer, x, [p for _, p in rows])
            o = self.o_block()
            for i, (kv, p) in enumerate(rows):
                attend_decode_row(self.model.args, qkv[i], qs[i], kv[layer], p, o[i])
            return qkv, self.post(layer, o)
        ba.meta.copy_(torch.tensor(ba.meta_rows(rows)))
        idx = ba.meta[0]
        a = self.model.args
        qkv = x.new_empty(self.rows, a.n_heads + 2 * a.n_kv_heads, a.head_dim)
        return qkv, self._fused_attention(layer, x, self.cos[idx], self.sin[idx], qkv, self.o_block())

    def mlp(self, layer: int, x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        if self.block_attention is not None:
            return self._fused_mlp(layer, x, a)
        L = self.model.layers[layer]
        h = x + a
        return h, L.mlp(L.post_attention_layernorm(h))

    # Where block attention runs (CUDA with Triton), the row-wise chains are single kernels too.
    def _fused_attention(self, layer: int, x: Tensor, cos: Tensor, sin: Tensor, qkv: Tensor, o: Tensor) -> Tensor:
        """norm, q/k/v product, RoPE + K/V into each row's buffer, attention -> o_proj(o)."""
        L, a, ba = self.model.layers[layer], self.model.args, self.block_attention
        n = L.input_layernorm
        lin = F.linear(rowwise.rms_norm(x, n.weight, n.eps), L.self_attn.wqkv, L.self_attn.bqkv)
        rowwise.rope_qkv(lin, cos, sin, qkv, a.n_heads, a.n_kv_heads, ba.meta, ba.anchor, layer)
        ba(layer, qkv, o, store=False)
        return L.self_attn.o_proj(o)

    def _fused_mlp(self, layer: int, x: Tensor, a: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """h = x + a and its norm in one kernel, gate/up product, silu * up, down product."""
        L = self.model.layers[layer]
        n = L.post_attention_layernorm
        h, y = rowwise.rms_norm(x, n.weight, n.eps, residual=a, h=h)
        return h, L.mlp.down_proj(rowwise.silu_mul(F.linear(y, L.mlp.w13)))

    # -------------------------------------------------------------- a prefill: one session's T rows
    # Eager (no registers, no graphs) in both classes. Where block attention runs, the row-wise
    # chains are the decode block's kernels here too (~38 ms of small PyTorch ops in a 2016-token
    # prefill of Llama-2-13B on the H200); the reference and every session take this same path.
    def prefill_attention(self, layer: int, x: Tensor, kv: Tensor, input_pos: int, cos: Tensor,
                          sin: Tensor) -> tuple[Tensor, Tensor]:
        """x [T, D] at positions input_pos.., kv the session's whole buffer, cos/sin [T, Dh]:
        writes its K/V at input_pos.. and returns (out [T, D], q/k/v rows [T, H + 2 Hkv, Dh])."""
        L = self.model.layers[layer]
        if self.block_attention is None:
            return attention_step(L, x, kv[layer], input_pos, cos, sin)
        a, T = self.model.args, x.shape[0]
        n, H = L.input_layernorm, a.n_heads
        lin = F.linear(rowwise.rms_norm(x.contiguous(), n.weight, n.eps), L.self_attn.wqkv, L.self_attn.bqkv)
        rows = x.new_empty(T, H + 2 * a.n_kv_heads, a.head_dim)
        rowwise.rope_qkv(lin, cos.contiguous(), sin.contiguous(), rows, H, a.n_kv_heads,
                         self._prefill_meta(kv, input_pos, T), self.block_attention.anchor, layer)
        end = input_pos + T
        o = attention_core(rows[:, :H].transpose(0, 1), kv[layer, 0, :, :end], kv[layer, 1, :, :end], input_pos)
        return L.self_attn.o_proj(o), rows

    def prefill_mlp(self, layer: int, x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """x, a [T, D] -> (h = x + a, the MLP of h)."""
        if self.block_attention is not None:
            return self._fused_mlp(layer, x.contiguous(), a.contiguous())
        L = self.model.layers[layer]
        h = x + a
        return h, L.mlp(L.post_attention_layernorm(h))

    def _prefill_meta(self, kv: Tensor, input_pos: int, T: int) -> Tensor:
        """rope_qkv's table for T tokens of one session (row t: position input_pos + t, the
        buffer's offset and context, length input_pos + t + 1), on the device; made once per
        pass (layers share it: the kernel adds the layer's offset)."""
        key = (kv.data_ptr(), kv.shape[3], input_pos, T)
        if key != self._prefill_meta_key:
            table = self.block_attention.meta_rows([(kv, input_pos + T - 1)])   # checks the buffer
            pos = torch.arange(input_pos, input_pos + T, device=kv.device)
            self._prefill_table = torch.stack([pos, torch.full_like(pos, table[1][0]), torch.full_like(pos, table[2][0]), pos + 1])
            self._prefill_meta_key = key
        return self._prefill_table

    def res(self, h: Tensor, m: Tensor) -> Tensor:
        return h + m

    def head(self, x: Tensor) -> Tensor:
        return self.model.logits(x)

    def owns(self, t: Tensor) -> bool:
        return False

    whole_pass = False   # GraphPieces: a whole pass as one graph

    @property
    def nbytes(self) -> int:
        return self.block_attention.nbytes if self.block_attention is not None else 0


class GraphPieces(EagerPieces):
    """The same parts captured as CUDA graphs over static registers (one set for the block)."""

    graphed = True

    @torch.no_grad()
    def __init__(self, model: Llama, rows: int, cos: Tensor, sin: Tensor):
        a, dev, dt = model.args, cos.device, cos.dtype
        before = torch.cuda.memory_allocated(dev)
        super().__init__(model, rows, cos, sin)
        z = lambda *shape, dtype=dt: torch.zeros((rows,) + shape, dtype=dtype, device=dev)
        ba = self.block_attention
        # meta: per row its position, and (for the block's attention) where its KV lives
        meta = ba.meta if ba is not None else torch.zeros(4, rows, dtype=torch.long, device=dev)
        self.reg = dict(hidden=z(a.dim), meta=meta, cos=z(a.head_dim), sin=z(a.head_dim),
                        qkv=z(a.n_heads + 2 * a.n_kv_heads, a.head_dim), qs=z(a.n_heads, a.head_dim),
                        o=z(self.o_width), attn_out=z(a.dim), h=z(a.dim), mlp_out=z(a.dim),
                        logits=z(a.vocab_size, dtype=torch.float32))
        self._storages = {t.untyped_storage().data_ptr() for t in self.reg.values()}
        # The table goes to the device through a ring of pinned buffers: an async copy reads its
        # buffer when the stream reaches it, so a buffer is rewritten only once its copy is done.
        self._ring = [(torch.zeros(4, rows, dtype=torch.long, pin_memory=True), torch.cuda.Event()) for _ in range(64)]
        self._ring_next = 0
        self._kernel_copy = hostcopy.available(dev)
        self._meta_key: tuple | None = None
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        r = self.reg
        for i in range(a.n_layers):
            if ba is not None:
                self._capture(("attn", i), lambda i=i: self._attention_into(i))
            else:
                self._capture(("pre", i), lambda i=i: self._pre_into(i))
                self._capture(("post", i), lambda i=i: r["attn_out"].copy_(EagerPieces.post(self, i, r["o"])))
            self._capture(("mlp", i), lambda i=i: self._mlp_into(i))
        self._capture(("res", 0), lambda: torch.add(r["h"], r["mlp_out"], out=r["hidden"]))
        self._capture(("head", 0), lambda: r["logits"].copy_(model.logits(r["hidden"])))
        if ba is not None:   # a whole pass in one launch, for spans where no stop can fire
            self._capture(("pass", 0), self._pass_into)
        torch.cuda.synchronize(dev)
        self._nbytes = torch.cuda.memory_allocated(dev) - before

    @property
    def nbytes(self) -> int:
        """Device memory of the registers and the graphs' private pool, measured at capture."""
        return self._nbytes

    def _pre_into(self, i: int) -> None:
        r = self.reg
        qkv, qs = self._pre(self.model.layers[i], r["hidden"], r["cos"], r["sin"])
        r["qkv"].copy_(qkv)
        r["qs"].copy_(qs)

    def _attention_into(self, i: int) -> None:
        r = self.reg
        r["attn_out"].copy_(self._fused_attention(i, r["hidden"], r["cos"], r["sin"], r["qkv"], r["o"]))

    def _pass_into(self) -> None:
        """Every layer's pieces in order, then the head: the same kernels as piece by piece."""
        r = self.reg
        for i in range(self.model.args.n_layers):
            self._attention_into(i)
            self._mlp_into(i)
            torch.add(r["h"], r["mlp_out"], out=r["hidden"])
        r["logits"].copy_(self.model.logits(r["hidden"]))

    def _mlp_into(self, i: int) -> None:
        r = self.reg
        if self.block_attention is not None:
            r["mlp_out"].copy_(self._fused_mlp(i, r["hidden"], r["attn_out"], h=r["h"])[1])
            return
        torch.add(r["hidden"], r["attn_out"], out=r["h"])
        L = self.model.layers[i]
        r["mlp_out"].copy_(L.mlp(L.post_attention_layernorm(r["h"])))

    def _capture(self, key, fn) -> None:
        side = torch.cuda.Stream(self.cos.device)
        side.wait_stream(torch.cuda.current_stream(self.cos.device))
        with torch.cuda.stream(side):   # warm-up: kernels chosen, workspaces made, off the capture
            fn()
        torch.cuda.current_stream(self.cos.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool, capture_error_mode="thread_local"):
            fn()
        self.graphs[key] = g

    # -------------------------------------------------------------- inputs
    def _load(self, tensors: list[Tensor], name: str) -> Tensor:
        reg = self.reg[name]
        n = len(tensors)
        row = reg[0].numel() * reg.element_size()
        if all(t.data_ptr() == reg.data_ptr() + i * row and t.shape[0] == 1 for i, t in enumerate(tensors)):
            return reg                    # already there: the previous part wrote it
        mine = reg.untyped_storage().data_ptr()   # rows moving within the register: copy them out first
        tensors = [t.clone() if t.untyped_storage().data_ptr() == mine else t for t in tensors]
        torch.cat(tensors, out=reg[:n])   # one copy for the whole block
        return reg

    def gather(self, tensors: list[Tensor], name: str) -> Tensor:
        return self._load(tensors, name)

    def _set_meta(self, table: list[list[int]]) -> None:
        """The block's table (row 0: positions) to the device, and cos/sin of the positions;
        only when it changed (a new position, another session in a row, a KV that moved)."""
        key = tuple(map(tuple, table))
        if key == self._meta_key:
            return
        host, done = self._ring[self._ring_next]
        self._ring_next = (self._ring_next + 1) % len(self._ring)
        done.synchronize()                 # (long done, unless 64 changes are in flight)
        host.copy_(torch.tensor(table))
        r = self.reg
        if self._kernel_copy:   # by kernel: a swap's copy on the copy engines never holds it up
            hostcopy.to_device(host, r["meta"])
        else:
            r["meta"].copy_(host, non_blocking=True)
        done.record()
        torch.index_select(self.cos, 0, r["meta"][0], out=r["cos"])   # once per change, not per layer
        torch.index_select(self.sin, 0, r["meta"][0], out=r["sin"])
        self._meta_key = key

    def _positions(self, pos: list[int]) -> None:
        self._set_meta([pos + [0] * (self.rows - len(pos))] + [[0] * self.rows] * 3)

    def o_block(self) -> Tensor:
        return self.reg["o"]

    # -------------------------------------------------------------- parts
    def pre(self, layer: int, x: Tensor, pos: list[int]) -> tuple[Tensor, Tensor]:
        assert x is self.reg["hidden"]
        self._positions(pos)
        self.graphs[("pre", layer)].replay()
        return self.reg["qkv"], self.reg["qs"]

    def post(self, layer: int, o: Tensor) -> Tensor:
        assert o is self.reg["o"]
        self.graphs[("post", layer)].replay()
        return self.reg["attn_out"]

    def attention(self, layer: int, x: Tensor, rows: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        if self.block_attention is None:
            return super().attention(layer, x, rows)
        assert x is self.reg["hidden"]
        self._set_meta(self.block_attention.meta_rows(rows))
        self.graphs[("attn", layer)].replay()
        return self.reg["qkv"], self.reg["attn_out"]

    def mlp(self, layer: int, x: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        assert x is self.reg["hidden"] and a is self.reg["attn_out"]
        self.graphs[("mlp", layer)].replay()
        return self.reg["h"], self.reg["mlp_out"]

    def res(self, h: Tensor, m: Tensor) -> Tensor:
        assert h is self.reg["h"] and m is self.reg["mlp_out"]
        self.graphs[("res", 0)].replay()
        return self.reg["hidden"]

    def head(self, x: Tensor) -> Tensor:
        assert x is self.reg["hidden"]
        self.graphs[("head", 0)].replay()
        return self.reg["logits"]

    @property
    def whole_pass(self) -> bool:
        return ("pass", 0) in self.graphs

    def run_pass(self, x: Tensor, rows: list[tuple[Tensor, int]]) -> Tensor:
        """A whole decode pass of the block from its layer-0 input x: the logits register."""
        assert x is self.reg["hidden"]
        self._set_meta(self.block_attention.meta_rows(rows))
        self.graphs[("pass", 0)].replay()
        return self.reg["logits"]

    def owns(self, t: Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self._storages


def make_pieces(model: Llama, rows: int, cos: Tensor, sin: Tensor, graphs: bool):
    if graphs and cos.device.type == "cuda":
        return GraphPieces(model, rows, cos, sin)
    return EagerPieces(model, rows, cos, sin)

