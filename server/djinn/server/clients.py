"""Which clients are connected: a client is connected while it holds a stream (Events or
Telemetry); every call also marks it seen. Leases (leases.py) read this."""
from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

Key = tuple[str, str]   # (user, client id)


class Clients:
    def __init__(self):
        self._lock = threading.Lock()
        self._streams: Counter = Counter()
        self._seen: dict[Key, float] = {}

    def seen(self, key: Key) -> None:
        with self._lock:
            self._seen[key] = time.monotonic()

    @contextmanager
    def streaming(self, key: Key):
        with self._lock:
            self._streams[key] += 1
            self._seen[key] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._streams[key] -= 1
                if self._streams[key] <= 0:
                    del self._streams[key]
                self._seen[key] = time.monotonic()

    def connected(self, key: Key) -> bool:
        with self._lock:
            return self._streams.get(key, 0) > 0

    def last_seen(self, key: Key) -> float:
        with self._lock:
            return self._seen.get(key, 0.0)

    def forget_idle(self, older_than: float) -> list[Key]:
        """Drops clients with no stream not seen for `older_than` seconds; returns them."""
        cut = time.monotonic() - older_than
        with self._lock:
            gone = [k for k, t in self._seen.items() if t < cut and self._streams.get(k, 0) <= 0]
            for k in gone:
                del self._seen[k]
        return gone

    def counts(self) -> tuple[int, int]:
        """(clients with an open stream, open streams)."""
        with self._lock:
            return len(self._streams), sum(self._streams.values())
