"""Tensor parallelism: one model over N ranks of one host (docs/tensor-parallel.md).

mesh.py starts or joins the process group and its DeviceMesh; shard.py turns a built Llama
into this rank's slice, which the unmodified Engine runs; activations.py reads and writes
activations whose shards live on different ranks; launch.py runs N ranks as processes.
"""
from .mesh import RankMesh, join, leave
from .shard import ShardArgs, shard_llama

__all__ = ["RankMesh", "join", "leave", "ShardArgs", "shard_llama"]
