"""Event fan-out to stream subscribers on the server's asyncio loop.

The worker publishes into the EventHub; one callback per publish schedules at most one
`_drain` on the loop, which hands the new events to every subscriber. Each subscriber's
queue is bounded: one that falls behind is marked lagged, gets an EVENT_KIND_LAGGED with the
last seq it was sent, and its stream ends; it resubscribes with since_seq. So an open stream
costs a queue and a coroutine, never a thread, and a slow reader never holds anyone up.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque

from ..runtime.events import EventHub, ServerEvent
from .auth import Identity


class Subscriber:
    def __init__(self, who: Identity, session_id: int, limit: int, since: int):
        self.who, self.session_id, self.limit = who, session_id, limit
        self.queue: deque[ServerEvent] = deque()
        self.wake = asyncio.Event()
        self.lagged_at: int | None = None   # set when the queue overflowed: last seq queued
        self.last_queued = since

    def wants(self, ev: ServerEvent) -> bool:
        if ev.kind == "output" and all(key != self.who.key for key, _ in ev.hits):
            return False   # a logpoint's line goes to the client that set the logpoint only
        return self.who.may_see(ev.owner) and (not self.session_id or ev.session_id in (0, self.session_id))

    def offer(self, events: list[ServerEvent]) -> None:
        if self.lagged_at is not None:
            return
        for ev in events:
            if ev.seq <= self.last_queued or not self.wants(ev):
                continue
            if len(self.queue) >= self.limit:
                self.lagged_at = self.last_queued
                break
            self.queue.append(ev)
            self.last_queued = ev.seq
        self.wake.set()


class Fanout:
    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop, queue_limit: int = 10_000):
        self.hub, self.loop, self.queue_limit = hub, loop, queue_limit
        self.subs: set[Subscriber] = set()
        self.watermark = hub.last_seq        # every event up to here was offered to the subscribers
        self._lock = threading.Lock()
        self._scheduled = False
        hub.listen(self._poke)

    def _poke(self) -> None:                 # any thread
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:                 # the loop is closed: the server is stopping
            pass

    def _drain(self) -> None:                # the loop
        with self._lock:
            self._scheduled = False
        events, _ = self.hub.since(self.watermark)
        if not events:
            return
        self.watermark = events[-1].seq
        for sub in list(self.subs):
            sub.offer(events)

    def subscribe(self, who: Identity, session_id: int, since: int) -> tuple[Subscriber, list[ServerEvent], bool]:
        """Registers a subscriber (on the loop) and returns it with the retained events it must be
        replayed first (seq in (since, watermark]) and whether some it asked for are gone."""
        sub = Subscriber(who, session_id, self.queue_limit, max(since, self.watermark))
        self.subs.add(sub)
        if since <= 0:
            return sub, [], False
        events, missing = self.hub.since(since)
        return sub, [e for e in events if e.seq <= self.watermark and sub.wants(e)], missing

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subs.discard(sub)
