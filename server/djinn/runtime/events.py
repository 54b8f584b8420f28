"""Server events: numbered, kept in a replay buffer bounded in bytes, handed to listeners.

The worker thread publishes; the service layer listens (one callback per publish, which
wakes its event loop) and reads what is new with `since`. Nothing here blocks on a slow
subscriber: each subscriber's own queue is bounded in the service layer.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class ServerEvent:
    kind: str                    # created, stopped, resumed, swap_out, swap_in, token, finished, closed, error,
    session_id: int              # waiting, device_failed
    snapshot: object = None      # session info after the event (built by the service layer's snapshot fn)
    stop_reason: str = ""
    nbytes: int = 0
    ms: float = 0.0
    token: int = 0
    text: str = ""
    owner: str | None = None     # the session's owner; None: every user may see it (device events)
    hits: tuple = ()             # ((user, client), breakpoint id) pairs of a stop
    time: float = field(default_factory=time.time)
    seq: int = 0
    size: int = 0                # bytes it holds, for the replay bound
    wire: bytes | None = None    # the encoded message (set by the hub's encoder at publish)


_OVERHEAD = 320   # the event object, its deque slot, its bytes object: about 270 B (tracemalloc), rounded up


def _size(ev: ServerEvent) -> int:
    if ev.wire is not None:
        return _OVERHEAD + len(ev.wire) + len(ev.text)
    snap = getattr(ev.snapshot, "ByteSize", None)
    return _OVERHEAD + 4 * len(ev.text) + 8 * (snap() if snap else 0)   # a decoded message holds far more


class EventHub:
    """`encode(ev)`, when given, turns an event into its wire bytes once, at publish; the
    decoded snapshot is then dropped, so what the replay buffer counts is what it holds."""

    def __init__(self, keep_bytes: int = 64 << 20, encode=None):
        self._encode = encode
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._recent: deque[ServerEvent] = deque()
        self._bytes, self.keep_bytes = 0, keep_bytes
        self._listeners: list = []

    def publish(self, ev: ServerEvent) -> None:
        with self._lock:   # numbered, encoded and appended together: the buffer stays in seq order
            ev.seq = next(self._seq)
            if self._encode is not None:
                ev.wire, ev.snapshot = self._encode(ev), None
            ev.size = _size(ev)
            self._recent.append(ev)
            self._bytes += ev.size
            while self._bytes > self.keep_bytes and len(self._recent) > 1:
                self._bytes -= self._recent.popleft().size
            listeners = list(self._listeners)
        for fn in listeners:
            fn()

    def listen(self, fn) -> None:
        """fn() is called (on the publishing thread) after every publish."""
        with self._lock:
            self._listeners.append(fn)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._recent[-1].seq if self._recent else 0

    @property
    def retained_bytes(self) -> int:
        return self._bytes

    def since(self, seq: int) -> tuple[list[ServerEvent], bool]:
        """Retained events with seq > `seq`, and whether some after `seq` are no longer retained."""
        with self._lock:
            if not self._recent or self._recent[-1].seq <= seq:
                return [], False
            first = self._recent[0].seq
            if seq >= first:
                # seqs are consecutive in the deque: index directly instead of scanning
                return list(itertools.islice(self._recent, seq - first + 1, None)), False
            return list(self._recent), first > seq + 1
