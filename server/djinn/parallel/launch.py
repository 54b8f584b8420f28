"""Runs a function on N ranks, one process each (spawned), for tests and benchmarks.

`run_ranks(fn, world)` starts N processes; each joins the group (mesh.join) and calls
fn(rank_mesh, *args). It returns every rank's outcome: its value (pickled back through a
queue), its error text, or the exit code of a process that died without answering. Nothing
waits forever: after timeout_s the processes still running are killed and reported so.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import queue as queue_mod
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .mesh import join, leave


@dataclass
class RankOutcome:
    rank: int
    value: Any = None
    error: str | None = None     # traceback text where fn raised
    exitcode: int | None = None  # the process's exit code (None: killed at the timeout)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exitcode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank, world, init_method, device, timeout_s, args, out):
    import torch

    torch.set_num_threads(1)   # N ranks share the host's cores
    try:
        rm = join(rank, world, init_method, device=device, timeout_s=timeout_s)
        try:
            out.put((rank, pickle.dumps(fn(rm, *args)), None))
        finally:
            leave()
    except BaseException:
        out.put((rank, None, traceback.format_exc()))


def run_ranks(fn: Callable, world: int, args: tuple = (), device: str = "cpu", timeout_s: float = 120.0,
              collective_timeout_s: float = 30.0) -> list[RankOutcome]:
    """fn must be importable by name (a module-level function): the ranks are spawned."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = f"tcp://127.0.0.1:{free_port()}"
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, init, device, collective_timeout_s, args, out),
                         daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    results = {r: RankOutcome(r) for r in range(world)}
    answered: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(answered) < world:
        try:   # drain answers as they come (a full pipe would block a rank's exit)
            rank, blob, err = out.get(timeout=0.2)
            results[rank].value, results[rank].error = (pickle.loads(blob) if blob else None), err
            answered.add(rank)
        except queue_mod.Empty:
            if all(not p.is_alive() for p in procs):
                try:
                    while True:
                        rank, blob, err = out.get(timeout=0.5)
                        results[rank].value, results[rank].error = (pickle.loads(blob) if blob else None), err
                        answered.add(rank)
                except queue_mod.Empty:
                    break
    for r, p in enumerate(procs):   # an answered rank gets a short grace to leave the group
        p.join(max(0.0, min(deadline - time.monotonic(), 10.0 if r in answered else timeout_s)))
        if p.is_alive():
            p.kill()
            p.join()
            results[r].exitcode = None
            if r not in answered:
                results[r].error = f"rank {r} still running after {timeout_s:.0f} s: killed"
        else:
            results[r].exitcode = p.exitcode
    return [results[r] for r in range(world)]
