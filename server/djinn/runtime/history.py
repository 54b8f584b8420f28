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
the host when large (a prefill's rows) or when the device share or the budget is used up; on the
host only at layer inputs (the residual stream: the attention and MLP points are one or two
pieces from there).
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
from .stops import parse_hit_condition

DEVICE_SNAPSHOT_MAX = 1 << 20   # a snapshot at most this big stays on the device (decode rows)
DEVICE_SHARE_MAX = 16 << 20     # and a session's device snapshots at most this much in all: they stay when
                                # it is swapped out (a 13B decode pass's 120 points are about 5 MB)
PREVIOUS_POINT, PREVIOUS_BREAKPOINT, RESTART = "point", "breakpoint", "restart"


@dataclass
class _Mark:
    """What a stop check keeps, at one point: restored with the activations."""
    layer: int
    point: str
    prev_norm: float
    data_last: dict               # (client, data breakpoint id) -> its `last`
    hits: dict                    # (client, breakpoint id) -> its hit count before this point's check
    data_hits: dict               # (client, data breakpoint id) -> its hit count before this point's check


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
    # point index -> (acts after a SetTensor there, on the host; bytes): a re-run through an edited
    # point goes on from its edited state, so the cap never undoes an edit (kept past the cap)
    edits: dict = field(default_factory=dict)
    # running totals: telemetry and the ledger read them from other threads while the worker records
    _bytes: int = 0
    _device: int = 0
    _edit_bytes: int = 0

    # ---------------------------------------------------------------- what it holds
    def nbytes(self) -> int:
        return self._bytes + self._edit_bytes

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
        self.edits.clear()
        self.dropped = self._bytes = self._device = self._edit_bytes = 0

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
        self.marks[here] = _Mark(s.layer, s.point, s.prev_norm, _data_last(s), _hits(s), _data_hits(s))
        nbytes = sum(t.numel() * t.element_size() for t in s.memory.acts.values())
        if nbytes > self.cap_bytes:
            self.dropped += 1           # never kept: going back here re-runs from an earlier point
            return
        on_device = nbytes <= self.device_max and self._device + nbytes <= self.device_share and fits(nbytes)
        if not on_device and s.point != LAYER:
            return    # large (a prefill's rows): the residual stream at layer inputs only; going back to an
                      # attention or MLP point re-runs its one or two pieces from there
        with torch.no_grad():
            acts = {k: t.clone() if on_device else t.to("cpu", copy=True) for k, t in s.memory.acts.items()}
        self._keep(here, _Clone(acts, nbytes, on_device))
        while self.nbytes() > self.cap_bytes and self.clones:
            self._drop(next(iter(self.clones)))   # the oldest first
            self.dropped += 1

    def edited(self, s: Session) -> None:
        """After a SetTensor at the point where s is paused: its state from here on includes the
        edit. Going back to this point itself gives its state as the pass reached it (before the edit)."""
        if s.pass_index != self.pass_index:
            return
        here = point_index(s.layer, s.point)
        self._forget_edits_from(here)
        with torch.no_grad():
            acts = {k: t.to("cpu", copy=True) for k, t in s.memory.acts.items()}
        self.edits[here] = (acts, sum(t.numel() * t.element_size() for t in acts.values()))
        self._edit_bytes += self.edits[here][1]

    def _forget_from(self, index: int, edits_from: int | None = None) -> None:
        for k in [k for k in self.marks if k >= index]:
            del self.marks[k]
        for k in [k for k in self.clones if k >= index]:
            self._drop(k)
        self._forget_edits_from(index if edits_from is None else edits_from)

    def _forget_edits_from(self, index: int) -> None:
        for k in [k for k in self.edits if k >= index]:
            self._edit_bytes -= self.edits.pop(k)[1]

    def base_for(self, index: int) -> tuple[int | None, dict | None, bool]:
        """Where restoring point `index` starts: (point, activations, edited). Its own clone; else
        the nearest earlier clone or edited state (an edit wins at the same point: it came later),
        to re-run from; (None, None, False) for the pass's start (its embeddings)."""
        if index in self.clones:
            return index, self.clones[index].acts, False
        k_clone = max((k for k in self.clones if k < index), default=-1)
        k_edit = max((k for k in self.edits if k < index), default=-1)
        if k_edit >= 0 and k_edit >= k_clone:
            return k_edit, self.edits[k_edit][0], True
        if k_clone >= 0:
            return k_clone, self.clones[k_clone].acts, False
        return None, None, False

    # ---------------------------------------------------------------- where to go back to
    def target(self, s: Session, to: str) -> tuple[int, str]:
        """The point index to go back to from where s is, and what to say about it."""
        here = point_index(s.layer, s.point)
        if s.pass_index != self.pass_index or not self.marks:
            raise precondition(f"session {s.id} has no history of this pass yet")
        before = [k for k in self.marks if k < here]
        where = f"{s.module_name()} of pass {s.pass_index}"
        if not before and to == RESTART:
            raise precondition(f"session {s.id} is already at the start of pass {s.pass_index} (layers.0)")
        if not before:
            raise precondition(f"session {s.id} is at {where}, the start of the pass: nothing before it to go back "
                               "to (earlier passes are final: their KV is what later tokens attend to)")
        if to == RESTART:
            return 0, ""
        if to == PREVIOUS_POINT:
            return max(before), ""
        if to == PREVIOUS_BREAKPOINT:
            hits = [k for k in sorted(before, reverse=True) if self.fired_at(s, k)]
            if hits:
                return hits[0], ""
            return 0, f"no breakpoint before {s.module_name()} in this pass: back at its start"
        raise invalid(f"unknown step-back target {to!r}")


    # ---------------------------------------------------------------- what fired where
    def hits_after(self, s: Session, index: int) -> tuple[dict, dict]:
        """The hit counts right after point `index`'s stop check: those the next point recorded
        before its own (the live counts when `index` is where s is)."""
        nxt = self.marks.get(index + 1)
        return (nxt.hits, nxt.data_hits) if nxt is not None else (_hits(s), _data_hits(s))

    def fired_at(self, s: Session, index: int) -> list:
        """The (client, id) of the breakpoints (not logpoints) that stopped the pass at point `index`
        when it went forward: its condition held there (the hit count went up) and its hit
        condition held for the count it reached. A breakpoint set or changed after the pass went
        past `index` has no count there: it fires there only when it has neither a condition
        nor a hit condition (what was never evaluated there cannot be said to have held)."""
        mark = self.marks.get(index)
        if mark is None:
            return []
        after, _ = self.hits_after(s, index)
        fired = []
        for client, bps in list(s.breakpoints.items()):
            for bp in bps:
                if bp.log_message or point_index(bp.layer, bp.point) != index:
                    continue
                key = (client, bp.id)
                if key in mark.hits and key in after:
                    n = after[key]
                    if n > mark.hits[key] and _hit_rule(bp.hit_condition)(n):
                        fired.append(key)
                elif not bp.condition and not bp.hit_condition:
                    fired.append(key)
        return fired


def _hit_rule(text: str):
    try:
        return parse_hit_condition(text)
    except ValueError:
        return lambda n: False    # refused when it was set: it never fired


def _hits(s: Session) -> dict:
    return {(client, bp.id): bp.hits for client, bps in s.breakpoints.items() for bp in bps}


def _data_hits(s: Session) -> dict:
    return {(client, d.id): d.hits for client, dbs in s.data_breakpoints.items() for d in dbs}


def _data_last(s: Session) -> dict:
    return {(client, d.id): d.last for client, dbs in s.data_breakpoints.items() for d in dbs}


def _name(index: int) -> str:
    layer, point = divmod(index, len(POINTS))
    p = POINTS[point]
    return f"layers.{layer}" if p == LAYER else f"layers.{layer}.{p}"


# -------------------------------------------------------------------- going back (worker thread)
def go_back(sched, s: Session, to: str) -> str:
    """StepBack / RestartPass (to = PREVIOUS_POINT, PREVIOUS_BREAKPOINT or RESTART), as a
    command on the worker. s stays paused at the restored point; a "stopped" event says so.
    Returns the event's text."""
    h: History | None = getattr(s, "history", None)
    if s.state != PAUSED:
        raise precondition(f"session {s.id} is {s.state}, not paused: only a paused session can go back")
    if h is None:
        raise precondition(f"session {s.id} keeps no history: create it with time_travel (launch attribute "
                           "timeTravel: true) to step back or restart a pass")
    index, note = h.target(s, to)
    fired = h.fired_at(s, index)           # before the restore forgets the points after it
    base, base_acts, edited = h.base_for(index)
    pieces = index - (base or 0)           # to re-run from the nearest snapshot (or the pass start)
    if pieces and sched._running is not None:
        from .scheduler import _Deferred   # a re-run needs the worker's pieces: after the current turn
        raise _Deferred()
    sched.bring_back(s)                    # its KV on the device (a swap-in if it was swapped out)
    t0 = time.perf_counter()
    was = s.memory.acts, s.layer, s.point
    try:
        _restore(sched.engine, s, h, index, base, base_acts)
    except Exception:
        # where it was (the KV a failed re-run wrote holds the values the pass wrote there before)
        s.memory.acts, s.layer, s.point = was
        raise
    ms = (time.perf_counter() - t0) * 1e3
    s.results.clear()                      # $N results belonged to the point it left
    hits = fired                           # the breakpoints that stopped the pass there going forward
    reason = "restart" if to == RESTART else "step back"
    start = f"{_name(base)}{' as edited' if edited else ''}" if base is not None else "the pass start"
    rerun = f" (re-ran {pieces} piece(s) from {start}, {ms:.1f} ms)" if pieces else ""
    text = "; ".join(x for x in (f"back to {s.module_name()} of pass {s.pass_index}{rerun}", note) if x)
    s.stop_reason, s.hit_ids, s.paused_at = reason, hits, time.monotonic()
    sched.ledger.note()
    sched._publish("stopped", s, stop_reason=reason, text=text, hits=tuple(hits))
    return text


@torch.no_grad()
def _restore(engine, s: Session, h: History, index: int, base: int | None, base_acts: dict | None) -> None:
    """s's activations and cursor at point `index`: its clone, or the nearest earlier snapshot (the
    pass start's embeddings when none) run forward to it, with the engine's own pieces."""
    if base is None:
        s.memory.acts = {"hidden": engine.model.embed_tokens(s.pass_tokens)}
        start = 0
    else:
        dev = s.memory.kv.device
        s.memory.acts = {k: t.to(dev, copy=True) for k, t in base_acts.items()}
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
    # hit counts as they were right after this point's check: going on counts each later point once
    hits, data_hits = h.hits_after(s, index)
    for client, bps in s.breakpoints.items():
        for bp in bps:
            bp.hits = hits.get((client, bp.id), bp.hits)
    for client, dbs in s.data_breakpoints.items():
        for d in dbs:
            d.last = mark.data_last.get((client, d.id), d.last)
            d.hits = data_hits.get((client, d.id), d.hits)
    h._forget_from(index + 1, edits_from=index)   # its future is recomputed as it goes on; an edit made
                                                   # here is undone (this is the point as first reached)
