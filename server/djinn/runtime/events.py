"""Fan-out of server events to any number of stream subscribers, with a replay buffer."""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class ServerEvent:
    kind: str                    # created, stopped, resumed, swap_out, swap_in, token, finished, closed, error, waiting
    session_id: int
    snapshot: dict | None = None  # session info after the event (dict built by the service layer's snapshot fn)
    stop_reason: str = ""
    nbytes: int = 0
    ms: float = 0.0
    token: int = 0
    text: str = ""
    time: float = field(default_factory=time.time)
    seq: int = 0


class EventHub:
    def __init__(self, keep: int = 50_000):
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._subs: list[queue.SimpleQueue] = []
        self._recent: deque[ServerEvent] = deque(maxlen=keep)

    def publish(self, ev: ServerEvent) -> None:
        with self._lock:
            ev.seq = next(self._seq)
            self._recent.append(ev)
            subs = list(self._subs)
        for q in subs:
            q.put(ev)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._recent[-1].seq if self._recent else 0

    def subscribe(self, since_seq: int = 0) -> queue.SimpleQueue:
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if since_seq > 0:
                for ev in self._recent:
                    if ev.seq > since_seq:
                        q.put(ev)
            self._subs.append(q)
        return q

    def unsubscribe(self, q) -> None:
        with self._lock:
            if q in self._subs:
                self._subs.remove(q)
