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


@dataclass
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
    size: int = 0                # approximate bytes, for the replay bound
    wire: object = None          # the encoded message, cached by the service layer


def _size(ev: ServerEvent) -> int:
    snap = getattr(ev.snapshot, "ByteSize", None)
    return 96 + len(ev.text) + (snap() if snap else 0)


class EventHub:
    def __init__(self, keep_bytes: int = 64 << 20):
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._recent: deque[ServerEvent] = deque()
        self._bytes, self.keep_bytes = 0, keep_bytes
        self._listeners: list = []

    def publish(self, ev: ServerEvent) -> None:
        ev.size = _size(ev)
        with self._lock:
            ev.seq = next(self._seq)
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
