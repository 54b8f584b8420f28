"""Llama in plain PyTorch, built to be run one piece at a time.

The engine (runtime/engine.py) calls embed, each layer's attention and MLP, and the head
itself, so a forward pass can stop between any of them and resume with nothing recomputed.
Parameter names follow Hugging Face's LlamaForCausalLM (minus the "model." prefix), so a
checkpoint loads with a plain load_state_dict. RoPE uses the rotate-half layout of HF.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelArgs


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Same order of operations as HF: normalise in fp32, cast back, then scale.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_tables(args: ModelArgs, length: int, device, dtype) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2, device=device, dtype=torch.float32) / args.head_dim))
    if args.rope_scaling is not None:
        inv_freq = scaled_inv_freq(inv_freq, args.rope_scaling)
    t = torch.arange(length, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def scaled_inv_freq(inv_freq: Tensor, sc) -> Tensor:
    """RoPE's inverse frequencies under a RopeScaling (config.py), in the same fp32 operations as HF."""
    if sc.kind == "linear":
        return inv_freq / sc.factor
    if sc.kind == "factors":
        return inv_freq / torch.tensor(sc.freq_factors, dtype=torch.float32, device=inv_freq.device)
    if sc.kind == "llama3":
        import math

        low_wavelen = sc.original_context / sc.low_freq_factor
        high_wavelen = sc.original_context / sc.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        out = torch.where(wavelen > low_wavelen, inv_freq / sc.factor, inv_freq)
        smooth = (sc.original_context / wavelen - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor)
        smoothed = (1 - smooth) * out / sc.factor + smooth * out
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, out)
    raise ValueError(f"RoPE scaling kind {sc.kind!r} is not implemented")


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: [..., Dh] with cos/sin broadcasting to it ([T, Dh] for [H, T, Dh]; [N, 1, Dh] for rows [N, heads, Dh])
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        hd = args.head_dim
        bias = args.attention_bias  # Qwen2: q/k/v have biases, o_proj none
        self.q_proj = nn.Linear(args.dim, args.n_heads * hd, bias=bias)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(args.n_heads * hd, args.dim, bias=False)
        self._wqkv: Tensor | None = None
        self._bqkv: Tensor | None = None

    @property
    def wqkv(self) -> Tensor:
        """q, k and v weights as one [(H + 2 Hkv) * Dh, D] matrix: one matrix-vector product per
        decode step instead of three. The three Linear weights are views into it (no extra
        memory), so loading a state dict or writing a weight writes the fused copy too; after
        `.to()` (which gives the parameters new storage) it is made again."""
        w = self._wqkv
        if w is None or self.q_proj.weight.data_ptr() != w.data_ptr():
            w = torch.cat([self.q_proj.weight.data, self.k_proj.weight.data, self.v_proj.weight.data])
            nq, nk = self.q_proj.weight.shape[0], self.k_proj.weight.shape[0]
            self.q_proj.weight.data, self.k_proj.weight.data, self.v_proj.weight.data = w[:nq], w[nq:nq + nk], w[nq + nk:]
            self._wqkv = w
            self.bqkv  # fuse the biases now too, not lazily inside a CUDA graph capture
        return w

    @property
    def bqkv(self) -> Tensor | None:
        """q, k and v biases as one [(H + 2 Hkv) * Dh] vector (views, as wqkv); None without biases."""
        if self.q_proj.bias is None:
            return None
        b = self._bqkv
        if b is None or self.q_proj.bias.data_ptr() != b.data_ptr():
            b = torch.cat([self.q_proj.bias.data, self.k_proj.bias.data, self.v_proj.bias.data])
            nq, nk = self.q_proj.bias.shape[0], self.k_proj.bias.shape[0]
            self.q_proj.bias.data, self.k_proj.bias.data, self.v_proj.bias.data = b[:nq], b[nq:nq + nk], b[nq + nk:]
            self._bqkv = b
        return b

    def qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: [T, D] (normed) -> q [H, T, Dh], k/v [Hkv, T, Dh], RoPE applied to q and k."""
        H = self.args.n_heads
        rows = qkv_rows(self, x, cos, sin)
        Hkv = self.args.n_kv_heads
        return rows[:, :H].transpose(0, 1), rows[:, H:H + Hkv].transpose(0, 1), rows[:, H + Hkv:].transpose(0, 1)

    def attend(self, q: Tensor, k_all: Tensor, v_all: Tensor, input_pos: int) -> Tensor:
        """q: [H, T, Dh] at positions input_pos.., k_all/v_all: [Hkv, input_pos+T, Dh] -> [T, D]."""
        return self.o_proj(attention_core(q, k_all, v_all, input_pos))


def qkv_rows(attn: Attention, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [N, D] normed rows, cos/sin: [N, Dh] (each row's own position) -> [N, H + 2 Hkv, Dh]:
    the q heads, then the k heads (both with RoPE), then the v heads. Rows are independent, so
    rows of several sessions can share one call."""
    a, N = attn.args, x.shape[0]
    nqk = a.n_heads + a.n_kv_heads
    qkv = F.linear(x, attn.wqkv, attn.bqkv).view(N, nqk + a.n_kv_heads, a.head_dim)
    qk = apply_rope(qkv[:, :nqk], cos[:, None], sin[:, None])
    return torch.cat([qk, qkv[:, nqk:]], dim=1)


def attention_core(q: Tensor, k_all: Tensor, v_all: Tensor, input_pos: int) -> Tensor:
    """q: [H, T, Dh] at positions input_pos.., k_all/v_all: [Hkv, input_pos+T, Dh] -> [T, H * Dh]
    (before o_proj).

    Grouped-query attention reads the cached K/V in place: query head h uses KV head
    h // (H / Hkv), as repeat_interleave would, without copying the cache every step.
    """
    H, T, Dh = q.shape
    Hkv, S = k_all.shape[0], k_all.shape[1]
    gqa = Hkv != H
    if T == 1:
        out = decode_attention((q * Dh ** -0.5).reshape(Hkv, H // Hkv, Dh), k_all, v_all).reshape(H, 1, Dh)
    else:
        # Prefill: 4-D [1, H, T, Dh] so SDPA can pick a fused kernel instead of
        # materialising the [H, T, S] attention matrix (6.5 GB at 4096 tokens).
        kw = {"enable_gqa": True} if gqa else {}
        if input_pos == 0 and S == T:
            out = F.scaled_dot_product_attention(q[None], k_all[None], v_all[None], is_causal=True, **kw)[0]
        else:
            # Chunk appended after earlier tokens: token i sees everything up to input_pos + i.
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=input_pos)
            out = F.scaled_dot_product_attention(q[None], k_all[None], v_all[None], attn_mask=mask, **kw)[0]
    return out.transpose(0, 1).reshape(T, H * Dh)


def decode_attention(q3: Tensor, k_all: Tensor, v_all: Tensor, out: Tensor | None = None) -> Tensor:
    """One query row per head: q3 [Hkv, G, Dh] already scaled by 1/sqrt(Dh) (the G query heads
    of a KV head are the rows of its batch entry: GQA without copies), k_all/v_all [Hkv, S, Dh]
    read in place -> [Hkv, G, Dh]. Three kernels, each reading K or V once: SDPA's math path
    made K contiguous, scaled it and checked it first (on the H200 ~0.14 ms of GPU and ~0.23 ms
    of CPU per layer at position 2011 for Llama-2-13B); its fused kernels are slower still for
    one query row."""
    # softmax accumulates in fp32 for half types and writes the input's dtype: one kernel
    return torch.bmm(torch.softmax(torch.bmm(q3, k_all.transpose(1, 2)), dim=-1), v_all, out=out)


def attend_decode_row(args: ModelArgs, qkv_row: Tensor, q_scaled: Tensor, kv_layer: Tensor, pos: int, out: Tensor) -> None:
    """One session's attention in a decode block: writes its K/V (qkv_row [H + 2 Hkv, Dh]) into
    kv_layer [2, Hkv, context, Dh] at pos, then attends over positions 0..pos with its scaled
    queries q_scaled [H, Dh], writing the [H * Dh] result into out (its row of the block)."""
    H, Hkv, Dh = args.n_heads, args.n_kv_heads, args.head_dim
    kv_layer.select(2, pos).copy_(qkv_row[H:].view(2, Hkv, Dh))
    G = H // Hkv
    decode_attention(q_scaled.view(Hkv, G, Dh), kv_layer[0, :, :pos + 1], kv_layer[1, :, :pos + 1], out=out.view(Hkv, G, Dh))


def attend_rows(attn: Attention, rows: Tensor, kv_layer: Tensor, input_pos: int) -> Tensor:
    """One session's attention: rows [T, H + 2 Hkv, Dh] from qkv_rows; writes its K/V into the
    static buffer kv_layer [2, Hkv, context, Dh] at input_pos (one copy) -> [T, H * Dh]."""
    a, T = attn.args, rows.shape[0]
    H, Hkv, end = a.n_heads, a.n_kv_heads, input_pos + rows.shape[0]
    kv_layer[:, :, input_pos:end] = rows[:, H:].view(T, 2, Hkv, a.head_dim).permute(1, 2, 0, 3)
    return attention_core(rows[:, :H].transpose(0, 1), kv_layer[0, :, :end], kv_layer[1, :, :end], input_pos)


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.dim, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.dim, bias=False)
        self._w13: Tensor | None = None

    @property
    def w13(self) -> Tensor:
        """gate and up weights as one [2 I, D] matrix (views, as Attention.wqkv)."""
        w = self._w13
        if w is None or self.gate_proj.weight.data_ptr() != w.data_ptr():
            w = torch.cat([self.gate_proj.weight.data, self.up_proj.weight.data])
            n = self.gate_proj.weight.shape[0]
            self.gate_proj.weight.data, self.up_proj.weight.data = w[:n], w[n:]
            self._w13 = w
        return w

    def forward(self, x: Tensor) -> Tensor:
        gate, up = F.linear(x, self.w13).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)


class Llama(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Layer(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def logits(self, h: Tensor) -> Tensor:
        """h: [T, D] residual stream -> [T, vocab] logits, in fp32."""
        return self.lm_head(self.norm(h)).float()

    def forward_plain(self, tokens: Tensor, kv: Tensor, input_pos: int, cos: Tensor, sin: Tensor) -> Tensor:
        """Uninterrupted pass (for tests and the reference): tokens [T] -> logits [T, vocab].

        kv: [n_layers, 2, Hkv, context, Dh]. cos/sin: full tables.
        """
        T = tokens.shape[0]
        c, s = cos[input_pos:input_pos + T], sin[input_pos:input_pos + T]
        x = self.embed_tokens(tokens)
        for i, layer in enumerate(self.layers):
            x = x + attention_step(layer, x, kv[i], input_pos, c, s)[0]
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.logits(x)


def attention_step(layer: Layer, x: Tensor, kv_layer: Tensor, input_pos: int, cos: Tensor, sin: Tensor):
    """One layer's attention for one session: x [T, D] -> (out [T, D], qkv rows [T, H + 2 Hkv, Dh]);
    writes K/V into the static buffer at input_pos. cos/sin: [T, Dh]."""
    rows = qkv_rows(layer.self_attn, layer.input_layernorm(x), cos, sin)
    out = layer.self_attn.o_proj(attend_rows(layer.self_attn, rows, kv_layer, input_pos))
    return out, rows


def module_tree(model: Llama) -> list[dict]:
    """The outline the clients show: one entry per module a breakpoint can name."""
    count = lambda m: sum(p.numel() for p in m.parameters())
    nodes = [dict(name="embed_tokens", kind="embedding", layer=-1, num_params=count(model.embed_tokens))]
    for i, layer in enumerate(model.layers):
        nodes.append(dict(name=f"layers.{i}", kind="layer", layer=i, num_params=count(layer)))
        nodes.append(dict(name=f"layers.{i}.attn", kind="attention", layer=i, num_params=count(layer.self_attn)))
        nodes.append(dict(name=f"layers.{i}.mlp", kind="mlp", layer=i, num_params=count(layer.mlp)))
    nodes.append(dict(name="norm", kind="norm", layer=-1, num_params=count(model.norm)))
    nodes.append(dict(name="lm_head", kind="linear", layer=-1, num_params=count(model.lm_head)))
    return nodes


@torch.no_grad()
def init_random_(model: Llama, seed: int) -> None:
    """Random weights made directly on the model's device (no hub here); std 0.02 like HF."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)


def weight_bytes(model: nn.Module) -> int:
    """Device bytes of the parameters, each storage once (fused weights are views: see wqkv)."""
    seen = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    return sum(seen.values())
