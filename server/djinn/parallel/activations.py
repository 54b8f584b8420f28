"""Activations of a sharded model as the client sees them: whole tensors.

Under tensor parallelism a session's activations come in two layouts. The residual stream
(`hidden`, `attn_out`, `mlp_out`) and the logits are replicated: after the all-reduce in o_proj
and down_proj every rank holds the same tensor. The per-head tensors are sharded on their head
dimension: `q` [heads, T, Dh] and the KV buffer [layers, 2, kv_heads, context, Dh] hold this
rank's heads only. Reads of a sharded tensor gather the shards; a write to a replicated tensor
is broadcast from the leader so that every rank applies the same value (ranks that diverged
would disagree from the next all-reduce on); a write to a sharded one is scattered. Summaries of a
sharded tensor come from distributed reductions, not from a gather.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .mesh import RankMesh

REPLICATED = ("hidden", "attn_out", "mlp_out", "logits")
HEAD_DIM = {"q": 0, "kv": 2}   # the dimension that holds the heads, for the sharded ones


def gather_heads(t: Tensor, dim: int, rm: RankMesh) -> Tensor:
    """The whole tensor from each rank's shard along `dim` (rank order = head order); with one
    rank, t itself (a view: clone it to keep it)."""
    if rm.world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(rm.world)]
    dist.all_gather(parts, t.contiguous(), group=rm.group)
    return torch.cat(parts, dim=dim)


def write_replicated(t: Tensor, value: Tensor | None, rm: RankMesh, src: int = 0) -> None:
    """Writes `value` (given on rank src; None elsewhere) into the replicated tensor t on every rank."""
    buf = value.to(t.device, t.dtype).contiguous() if rm.rank == src else torch.empty_like(t)
    if rm.world > 1:
        dist.broadcast(buf, src=src, group=rm.group)
    t.copy_(buf)


def write_heads(t: Tensor, dim: int, whole: Tensor | None, rm: RankMesh, src: int = 0) -> None:
    """Writes the whole tensor `whole` (given on rank src) into each rank's shard t along `dim`."""
    if rm.world == 1:
        t.copy_(whole)
        return
    chunks = list(whole.to(t.device, t.dtype).chunk(rm.world, dim=dim)) if rm.rank == src else None
    buf = torch.empty_like(t)
    dist.scatter(buf, [c.contiguous() for c in chunks] if chunks else None, src=src, group=rm.group)
    t.copy_(buf)


def sharded_summary(t: Tensor, rm: RankMesh) -> dict:
    """Statistics of the whole tensor from its shards, without gathering it: one all-reduce of
    (count, sum, sum of squares, NaN count, Inf count) and one each for min and max."""
    x = t.detach().double()
    finite = x[torch.isfinite(x)]
    sums = torch.tensor([float(x.numel()), float(finite.sum()), float((finite * finite).sum()),
                         float(torch.isnan(x).sum()), float(torch.isinf(x).sum())], dtype=torch.float64)
    lo = torch.tensor([float(finite.min()) if finite.numel() else float("inf")], dtype=torch.float64)
    hi = torch.tensor([float(finite.max()) if finite.numel() else float("-inf")], dtype=torch.float64)
    if rm.world > 1:
        dist.all_reduce(sums, group=rm.group)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=rm.group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=rm.group)
    n, s, ss, nan, inf = sums.tolist()
    m = n - nan - inf
    mean = s / m if m else float("nan")
    return dict(numel=int(n), mean=mean, std=(max(ss / m - mean * mean, 0.0) * m / max(m - 1, 1)) ** 0.5 if m else float("nan"),
                min=float(lo), max=float(hi), nan=int(nan), inf=int(inf))
