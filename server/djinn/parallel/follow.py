"""The leader's commands to the other ranks: rank 0 decides, every rank executes.

Under `--tp N` only rank 0 serves gRPC and runs the scheduler. Each thing it does to the model
(start a session, run a piece, write an activation, swap a KV) is a small picklable command
tuple, broadcast over the control group and then executed by every rank, the leader included,
in the same order. The model's collectives then pair up by construction: all ranks run the
same pieces of the same sessions at the same time, so a breakpoint that stops the leader's
session stops it on every rank at the same stop point (nothing runs until the next command).
"""
from __future__ import annotations

from typing import Callable

import torch.distributed as dist

from .mesh import RankMesh

QUIT = ("quit",)


def _broadcast(rm: RankMesh, cmd):
    buf = [cmd]
    if rm.world > 1:
        dist.broadcast_object_list(buf, src=0, group=rm.control)
    return buf[0]


def lead(rm: RankMesh, cmd: tuple, execute: Callable[[tuple], object]):
    """On the leader: sends cmd to the followers, then executes it here; returns its result."""
    assert rm.leader, "only rank 0 issues commands"
    _broadcast(rm, cmd)
    return None if cmd[0] == QUIT[0] else execute(cmd)


def follow(rm: RankMesh, execute: Callable[[tuple], object]) -> int:
    """On a follower: executes the leader's commands until QUIT; returns how many. A leader
    that dies fails the wait (its socket closes) with RuntimeError: the follower exits."""
    assert not rm.leader
    n = 0
    while (cmd := _broadcast(rm, None))[0] != QUIT[0]:
        execute(cmd)
        n += 1
    return n
