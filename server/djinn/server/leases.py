"""Leases, on the worker loop: a session nobody holds is kept `lease_s`, then closed and its
device and host memory freed; an ended session is retired `retire_s` after it ended (or was
last touched); a client gone for a lease loses its breakpoints.

A session is held while any of its holders (the client that created it, and every client of
its owner that listed or touched it since) has a stream open.
"""
from __future__ import annotations

import time

from ..runtime.scheduler import Scheduler
from .clients import Clients


class Leases:
    def __init__(self, sched: Scheduler, clients: Clients, lease_s: float, retire_s: float):
        self.sched, self.clients, self.lease_s, self.retire_s = sched, clients, lease_s, retire_s
        self.closed = 0     # sessions closed because their lease ran out
        self.retired = 0

    def tick(self) -> None:
        now_m, now = time.monotonic(), time.time()
        with self.sched.lock:
            sessions = list(self.sched.sessions.values())
        for s in sessions:
            if not s.alive:
                if now_m >= max(s.ended_at, s.touched) + self.retire_s:
                    self.sched.retire(s)
                    self.retired += 1
                continue
            if any(self.clients.connected(h) for h in s.holders):
                s.lease_expires_at = 0.0
                continue
            last = max([self.clients.last_seen(h) for h in s.holders] + [s.touched])
            ends = last + self.lease_s
            s.lease_expires_at = now + (ends - now_m)
            if now_m >= ends:
                self.closed += 1
                self.sched.close(s, why=f"lease expired: no client of {s.owner or 'its owner'} was connected for "
                                        f"{self.lease_s:g} s (--lease-s); its memory is freed")
        for key in self.clients.forget_idle(self.lease_s):
            for s in sessions:
                s.breakpoints.pop(key, None)
