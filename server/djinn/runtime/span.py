"""How far a batch may run before any of its sessions could stop: the stop checks between
pieces are skipped where no stop can fire.

A session can only stop where something asks for it: a breakpoint's or logpoint's own point,
any point while it steps, has a pause request, traps or data breakpoints, or the end of the pass
(its token). Elsewhere `check_stop` would say no, so the worker runs the pieces up to the
nearest such point in one go. The numbers are the same either way (the same pieces run); only
the checks are fewer. Commands that arrive meanwhile (a pause, new breakpoints) are served
before the next span.
"""
from __future__ import annotations

from .session import POINTS, Session

_ORDER = {p: i for i, p in enumerate(POINTS)}


def point_index(layer: int, point: str) -> int:
    """A stop point's place in a pass: layers.0 is 0, layers.0.attn 1, layers.0.mlp 2, ..."""
    return layer * len(POINTS) + _ORDER[point]


def pieces_to_next_check(sessions: list[Session], n_layers: int) -> int:
    """The number of pieces all of `sessions` (at one stop point) may run before one of them
    reaches a point where it could stop; at least 1, at most the rest of the pass."""
    here = point_index(sessions[0].layer, sessions[0].point)
    span = n_layers * len(POINTS) - here          # the pass's end: a token
    for s in sessions:
        t = s.traps
        if (s.pause_requested or s.step_kind or s.stop_on_entry or t.nan or t.inf or t.norm_spike
                or any(s.data_breakpoints.values()) or s.history is not None):   # time travel records every point
            return 1
        for bps in list(s.breakpoints.values()):
            for bp in bps:
                at = point_index(bp.layer, bp.point)
                if at > here:
                    span = min(span, at - here)
    return max(1, span)
