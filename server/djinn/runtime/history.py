"""Time travel inside a forward pass: a session's stop points of its current pass, kept so that
it can go back to any of them (StepBack, RestartPass) and run on from there.

A pass's state at a stop point is its cursor (layer, point) plus the saved activations
(`memory.acts`); the KV written so far belongs to positions of this pass, which a re-run writes
again in the same slots before anything reads them (attention writes a layer's K/V, then attends).
So restoring a point's activations and cursor is all going back takes, and continuing without an
edit gives the same numbers as never having gone back.

Each stop point the session reaches is recorded (runtime/span.py makes such sessions check every
point): its cursor and the few scalars a stop check keeps (the norm-spike trap's last norm, the
data breakpoints' last values) always; its activations as a clone, on the device when small (a
decode pass's row: counted in the budget's ledger, at most DEVICE_SHARE_MAX per session) and on
the host when large (a prefill's rows) or when the device share or the budget is used up.
The clones are capped per session: past the cap the oldest are dropped, and going back to a point
without its clone re-runs the pass from the nearest earlier clone (or from the pass's start,
whose activations are the tokens' embeddings). Everything is dropped when the pass ends.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .errors import invalid, precondition
from .session import LAYER, PAUSED, POINTS, Session
from .span import point_index

DEVICE_SNAPSHOT_MAX = 1 << 20   # a snapshot at most this big stays on the device (decode rows)
DEVICE_SHARE_MAX = 16 << 20     # and a session's device snapshots at most this much in all: they stay when
                                # it is swapped out (a 13B decode pass's 120 points are about 5 MB)
PREVIOUS_POINT, PREVIOUS_BREAKPOINT = "point", "breakpoint"


@dataclass
class _Mark:
    """What a stop check keeps, at one point: restored with the activations."""
    layer: int
    point: str
    prev_norm: float
    data_last: dict               # (client, data breakpoint id) -> its `last`


@dataclass
class _Clone:
    acts: dict
    nbytes: int
    on_device: bool


@dataclass
class History:
    cap_bytes: int
    device_max: int = DEVICE_SNAPSHOT_MAX
    device_share: int = DEVICE_SHARE_MAX
    pass_index: int = -1
    marks: dict = field(default_factory=dict)            # point index -> _Mark, every point reached
    clones: OrderedDict = field(default_factory=OrderedDict)   # point index -> _Clone, oldest first
    dropped: int = 0                                     # clones dropped for the cap in this pass
    # running totals: telemetry and the ledger read them from other threads while the worker records
    _bytes: int = 0
    _device: int = 0

    # ---------------------------------------------------------------- what it holds
    def nbytes(self) -> int:
        return self._bytes

    def device_bytes(self) -> int:
        return self._device

    def _keep(self, index: int, clone: _Clone) -> None:
        self.clones[index] = clone
        self._bytes += clone.nbytes
        self._device += clone.nbytes if clone.on_device else 0

    def _drop(self, index: int) -> None:
        c = self.clones.pop(index)
        self._bytes -= c.nbytes
        self._device -= c.nbytes if c.on_device else 0

    def info(self) -> dict:
        return dict(points=len(self.marks), snapshots=len(self.clones), bytes=self.nbytes(),
                    device_bytes=self.device_bytes(), cap_bytes=self.cap_bytes, dropped=self.dropped)

    def clear(self) -> None:
        self.marks.clear()
        self.clones.clear()
        self.dropped = self._bytes = self._device = 0

    # ---------------------------------------------------------------- recording (worker thread)
    def record(self, s: Session, fits=lambda nbytes: True) -> None:
        """At the stop point s just reached, before its stop check. A new pass starts a new
        history; a point reached again (after going back) replaces what was kept from it on.
        `fits(nbytes)`: whether the ledger has room for a device snapshot (else it goes to the host)."""
        if s.pass_index != self.pass_index:
            self.clear()
            self.pass_index = s.pass_index
        here = point_index(s.layer, s.point)
        self._forget_from(here)
        self.marks[here] = _Mark(s.layer, s.point, s.prev_norm, _data_last(s))
        nbytes = sum(t.numel() * t.element_size() for t in s.memory.acts.values())
        if nbytes > self.cap_bytes:
            self.dropped += 1           # never kept: going back here re-runs from an earlier point
            return
        on_device = nbytes <= self.device_max and self._device + nbytes <= self.device_share and fits(nbytes)
        with torch.no_grad():
            acts = {k: t.clone() if on_device else t.to("cpu", copy=True) for k, t in s.memory.acts.items()}
        self._keep(here, _Clone(acts, nbytes, on_device))
        while self._bytes > self.cap_bytes:
            self._drop(next(iter(self.clones)))   # the oldest first
            self.dropped += 1

    def _forget_from(self, index: int) -> None:
        for k in [k for k in self.marks if k >= index]:
            del self.marks[k]
        for k in [k for k in self.clones if k >= index]:
            self._drop(k)

    # ---------------------------------------------------------------- where to go back to
    def target(self, s: Session, to: str) -> tuple[int, str]:
        """The point index to go back to from where s is, and what to say about it."""
        here = point_index(s.layer, s.point)
        if s.pass_index != self.pass_index or not self.marks:
            raise precondition(f"session {s.id} has no history of this pass yet")
        before = [k for k in self.marks if k < here]
        where = f"{s.module_name()} of pass {s.pass_index}"
        if not before:
            raise precondition(f"session {s.id} is at {where}, the start of the pass: nothing before it to go back "
                               "to (earlier passes are final: their KV is what later tokens attend to)")
        if to == PREVIOUS_POINT:
            return max(before), ""
        if to == PREVIOUS_BREAKPOINT:
            at = {point_index(bp.layer, bp.point) for bps in list(s.breakpoints.values()) for bp in bps
                  if not bp.log_message}
            hits = [k for k in before if k in at]
            if hits:
                return max(hits), ""
            return 0, f"no breakpoint before {s.module_name()} in this pass: back at its start"
        raise invalid(f"unknown step-back target {to!r}")


def _data_last(s: Session) -> dict:
    return {(client, d.id): d.last for client, dbs in s.data_breakpoints.items() for d in dbs}


def _name(index: int) -> str:
    layer, point = divmod(index, len(POINTS))
    p = POINTS[point]
    return f"layers.{layer}" if p == LAYER else f"layers.{layer}.{p}"


# -------------------------------------------------------------------- going back (worker thread)
def go_back(sched, s: Session, to: str) -> str:
    """StepBack / RestartPass (to = PREVIOUS_POINT, PREVIOUS_BREAKPOINT or "restart"), as a
    command on the worker. s stays paused at the restored point; a "stopped" event says so.
    Returns the event's text."""
    h: History | None = getattr(s, "history", None)
    if s.state != PAUSED:
        raise precondition(f"session {s.id} is {s.state}, not paused: only a paused session can go back")
    if h is None:
        raise precondition(f"session {s.id} keeps no history: create it with time_travel (launch attribute "
                           "timeTravel: true) to step back or restart a pass")
    index, note = (0, "") if to == "restart" else h.target(s, to)
    if to == "restart" and point_index(s.layer, s.point) == 0:
        raise precondition(f"session {s.id} is already at the start of pass {s.pass_index} (layers.0)")
    base = max((k for k in h.clones if k <= index), default=None)
    pieces = index - (base or 0)           # to re-run from the nearest clone (or the pass start)
    if pieces and sched._running is not None:
        from .scheduler import _Deferred   # a re-run needs the worker's pieces: after the current turn
        raise _Deferred()
    sched.bring_back(s)                    # its KV on the device (a swap-in if it was swapped out)
    t0 = time.perf_counter()
    _restore(sched.engine, s, h, index, base)
    ms = (time.perf_counter() - t0) * 1e3
    s.results.clear()                      # $N results belonged to the point it left
    hits = [(client, bp.id) for client, bps in list(s.breakpoints.items()) for bp in bps
            if not bp.log_message and point_index(bp.layer, bp.point) == index]
    reason = "restart" if to == "restart" else "step back"
    rerun = f" (re-ran {pieces} piece(s) from {_name(base) if base is not None else 'the pass start'}, " \
        f"{ms:.1f} ms)" if pieces else ""
    text = "; ".join(x for x in (f"back to {s.module_name()} of pass {s.pass_index}{rerun}", note) if x)
    s.stop_reason, s.hit_ids, s.paused_at = reason, hits, time.monotonic()
    sched.ledger.note()
    sched._publish("stopped", s, stop_reason=reason, text=text, hits=tuple(hits))
    return text


@torch.no_grad()
def _restore(engine, s: Session, h: History, index: int, base: int | None) -> None:
    """s's activations and cursor at point `index`: its clone, or the nearest earlier clone (the
    pass start's embeddings when none) run forward to it, with the engine's own pieces."""
    if base is None:
        s.memory.acts = {"hidden": engine.model.embed_tokens(s.pass_tokens)}
        start = 0
    else:
        dev = s.memory.kv.device
        s.memory.acts = {k: t.to(dev, copy=True) for k, t in h.clones[base].acts.items()}
        start = base
    s.layer, s.point = h.marks[start].layer, h.marks[start].point
    if start != index:
        with engine.lock:
            for _ in range(index - start):
                assert engine.advance(s) is None, "a re-run never ends the pass"
            engine.settle(s)
    mark = h.marks[index]
    assert (s.layer, s.point) == (mark.layer, mark.point)
    s.prev_norm = mark.prev_norm
    for client, dbs in s.data_breakpoints.items():
        for d in dbs:
            d.last = mark.data_last.get((client, d.id), d.last)
    h._forget_from(index + 1)              # its future is recomputed when it goes on
