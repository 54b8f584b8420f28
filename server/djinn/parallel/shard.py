"""This rank's slice of a Llama: attention heads and MLP columns split across the mesh.

Which split, and why plain local tensors at run time:

1. The split is made by torch's tensor-parallel API: `parallelize_module` with ColwiseParallel
   on q/k/v and gate/up (weights Shard(0): whole heads, whole MLP columns, contiguous per rank)
   and RowwiseParallel on o_proj and down_proj (weights Shard(1)). Rank r gets query heads
   r*H/tp.. and KV heads r*Hkv/tp..; since query head h reads KV head h // (H/Hkv), a rank's
   queries only ever read its own KV heads (GQA included), so attention needs no collective.
2. The pieces then run on the local shards (`to_local()`), not on DTensors. The engine fuses
   q/k/v and gate/up into one matrix whose parts are views (`Attention.wqkv`, `MLP.w13`) and
   calls `F.linear` on plain tensors, and on CUDA every piece is captured as a graph: a DTensor
   weight fits neither (mixing DTensor and Tensor operands is refused, concatenating Shard(0)
   DTensors re-lays them out, and DTensor dispatch costs CPU time per op in a decode step).
   What RowwiseParallel's output layout means — partial sums made Replicate — is done by
   `RowParallelLinear`: o_proj and down_proj all-reduce their output inside forward, the one
   collective per row-parallel layer that RowwiseParallel would issue.

So the per-rank model is an ordinary `Llama` whose `args` are a `ShardArgs` (local head, KV
head and MLP counts, the full model's head_dim): the unmodified Engine and pieces run it, every
rank executes every piece in the same order, and the all-reduces in o_proj and down_proj keep
the residual stream (`hidden`, `attn_out`, `mlp_out`, the logits) identical on all ranks. A
stop point is a piece boundary, so all ranks stop at the same one. Embedding, norms and
lm_head are replicated (each rank holds them whole).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from ..model.config import ModelArgs
from ..model.llama import Llama
from .mesh import RankMesh


@dataclass(frozen=True)
class ShardArgs(ModelArgs):
    """One rank's shapes: n_heads, n_kv_heads and intermediate_size are this rank's; head_dim
    stays the full model's (ModelArgs derives it as dim // n_heads, which would be tp times too
    large here)."""
    full_n_heads: int = 0
    tp: int = 1
    rank: int = 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.full_n_heads


def check_divisible(args: ModelArgs, tp: int) -> None:
    """Refuses, by name, a model whose heads or MLP columns do not split evenly over tp ranks."""
    bad = [f"{name}={getattr(args, name)}" for name in ("n_heads", "n_kv_heads", "intermediate_size")
           if getattr(args, name) % tp]
    if bad:
        raise ValueError(f"--tp {tp}: {', '.join(bad)} not divisible by {tp}; tensor parallelism splits "
                         f"whole attention heads, KV heads and MLP columns evenly across the ranks")


def shard_args(args: ModelArgs, tp: int, rank: int) -> ShardArgs:
    check_divisible(args, tp)
    base = {f.name: getattr(args, f.name) for f in fields(ModelArgs)}
    base.update(n_heads=args.n_heads // tp, n_kv_heads=args.n_kv_heads // tp,
                intermediate_size=args.intermediate_size // tp)
    return ShardArgs(**base, full_n_heads=args.n_heads, tp=tp, rank=rank)


class RowParallelLinear(nn.Linear):
    """A row-parallel Linear on local tensors: this rank's input columns times its weight
    columns is a partial sum; the all-reduce makes it the whole product on every rank (what
    RowwiseParallel's Partial -> Replicate output does). The bias, replicated, is added once,
    after the sum."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight)
        dist.all_reduce(out, group=self.group)
        return out if self.bias is None else out + self.bias


def tp_plan(n_layers: int) -> dict:
    """The column/row-wise plan: heads and MLP columns split, o_proj and down_proj row-wise."""
    plan = {}
    for i in range(n_layers):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
            plan[f"layers.{i}.{name}"] = ColwiseParallel()
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            plan[f"layers.{i}.{name}"] = RowwiseParallel()
    return plan


# Which parameters are split, and along which dimension (ColwiseParallel: Shard(0) for weight
# and bias; RowwiseParallel: Shard(1) for the weight, the bias replicated).
SHARD_DIM = {"self_attn.q_proj.weight": 0, "self_attn.k_proj.weight": 0, "self_attn.v_proj.weight": 0,
             "self_attn.q_proj.bias": 0, "self_attn.k_proj.bias": 0, "self_attn.v_proj.bias": 0,
             "mlp.gate_proj.weight": 0, "mlp.up_proj.weight": 0,
             "self_attn.o_proj.weight": 1, "mlp.down_proj.weight": 1}


def shard_dim(name: str) -> int | None:
    """The dimension parameter `name` is split along; None: replicated."""
    if not name.startswith("layers."):
        return None
    return SHARD_DIM.get(name.split(".", 2)[2])


def local_skeleton(local: ShardArgs, rm: RankMesh, dtype: torch.dtype) -> Llama:
    """A Llama of this rank's shapes on the meta device, o_proj/down_proj all-reducing."""
    with torch.device("meta"):
        out = Llama(local).to(dtype)
        for layer in out.layers:
            for parent, name in ((layer.self_attn, "o_proj"), (layer.mlp, "down_proj")):
                old = getattr(parent, name)
                setattr(parent, name, RowParallelLinear(old.in_features, old.out_features, old.bias is not None,
                                                        rm.group, dtype=dtype))
    return out


@torch.no_grad()
def shard_llama(model: Llama, rm: RankMesh) -> Llama:
    """This rank's slice of `model` (built whole on every rank, same weights; rank 0's are the
    ones distributed). Returns a new Llama on rm.device with ShardArgs; `model` is consumed
    (its sharded weights become DTensors, then are freed). tp=1 returns the model as it is."""
    args = model.args
    if rm.world == 1:
        return model
    local = shard_args(args, rm.world, rm.rank)
    dtype = next(model.parameters()).dtype
    parallelize_module(model, rm.mesh, tp_plan(args.n_layers))
    state = {k: (v.to_local() if isinstance(v, DTensor) else v).contiguous() for k, v in model.state_dict().items()}
    out = local_skeleton(local, rm, dtype)
    out.load_state_dict(state, assign=True, strict=True)
    if args.tie_embeddings:
        out.lm_head.weight = out.embed_tokens.weight
    out = out.to(rm.device)
    return out.eval().requires_grad_(False)


@torch.no_grad()
def random_sharded(args: ModelArgs, rm: RankMesh, dtype: torch.dtype, seed: int = 0) -> Llama:
    """Random weights (std 0.02, norms 1) made on this rank's device, this rank's slice only:
    for models no rank could hold whole (a 70B-shaped config on two GPUs). Each parameter comes
    from a generator seeded by its name, made whole one at a time and sliced, so the weights
    are the same for every tp (TP=2 is comparable with TP=1 built this way) and the replicated
    ones agree across ranks. Not the weights of build_model's init_random_ (one stream)."""
    import zlib

    tp = rm.world
    local = shard_args(args, tp, rm.rank) if tp > 1 else args
    if tp > 1:
        net = local_skeleton(local, rm, dtype).to_empty(device=rm.device)
    else:
        with torch.device("meta"):
            net = Llama(args).to(dtype)
        net = net.to_empty(device=rm.device)
    if args.tie_embeddings:
        net.lm_head.weight = net.embed_tokens.weight
    for name, p in net.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
            continue
        d = shard_dim(name) if tp > 1 else None
        full = list(p.shape)
        if d is not None:
            full[d] *= tp
        gen = torch.Generator(device=rm.device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        whole = torch.empty(full, dtype=dtype, device=rm.device).normal_(0.0, 0.02, generator=gen)
        p.copy_(whole if d is None else whole.chunk(tp, dim=d)[rm.rank])
        del whole
    return net.eval().requires_grad_(False)
