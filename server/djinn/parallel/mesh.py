"""Starts (or joins) the process group of a tensor-parallel run: gloo on the CPU, NCCL on GPUs.

Every rank calls `join` with the same address and world size; the result carries the
DeviceMesh the tensor-parallel plans shard over, the group the row-parallel layers all-reduce
in, a separate gloo group for health checks and one for the leader's commands. The health group is separate so that a
check never interleaves with the model's collectives, and gloo because NCCL has no
`monitored_barrier`: that barrier names the ranks that did not arrive instead of hanging.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


@dataclass
class RankMesh:
    rank: int
    world: int
    device: torch.device
    mesh: DeviceMesh          # 1-D, dimension "tp"
    group: dist.ProcessGroup  # the mesh's group: the model's all-reduces
    health: dist.ProcessGroup  # gloo, for alive()
    control: dist.ProcessGroup | None = None  # gloo, the leader's commands (follow.py)

    @property
    def leader(self) -> bool:
        """Rank 0 serves gRPC; the others follow its commands (docs/tensor-parallel.md)."""
        return self.rank == 0

    def alive(self, timeout_s: float = 10.0) -> None:
        """Returns when every rank reached this call; raises RuntimeError naming the ranks that
        did not within timeout_s (dead or stuck), instead of waiting forever."""
        if self.world > 1:
            dist.monitored_barrier(group=self.health, timeout=timedelta(seconds=timeout_s), wait_all_ranks=True)


def join(rank: int, world: int, init_method: str | None = None, device: str = "cpu",
         timeout_s: float = 60.0) -> RankMesh:
    """Joins the group as `rank` of `world`. device "cpu" uses gloo; "cuda" uses NCCL with
    GPU `rank` (one host: the local rank is the rank). timeout_s bounds every collective: a
    peer that stops answering fails the call after that long (a dead peer's closed socket
    fails it at once)."""
    if device == "cuda":
        torch.cuda.set_device(rank)
        dev, backend = torch.device("cuda", rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if init_method is None:   # torchrun's variables
        init_method = f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}"
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=timeout,
                            **({"device_id": dev} if backend == "nccl" else {}))
    mesh = init_device_mesh(dev.type, (world,), mesh_dim_names=("tp",))
    health = dist.new_group(backend="gloo", timeout=timeout)
    # Followers wait on this one between requests, however long the leader idles: no timeout
    # worth the name (a dead leader still fails the wait at once: its socket closes).
    control = dist.new_group(backend="gloo", timeout=timedelta(days=7))
    return RankMesh(rank, world, dev, mesh, mesh.get_group("tp"), health, control)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
