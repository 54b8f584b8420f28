"""The one GPU worker: runs every session's forward pass, swaps, and client commands.

All model work happens on this thread. RPC handlers hand it closures (`submit`/`call`) and
wait for the result; they never touch the GPU. Policy:
- fair turns: a turn ends when the session stops or ends a forward pass (or, with a quantum,
  has run that long while another session is runnable); the next turn goes to the runnable
  session served least recently, so nobody waits behind another's long generation. A
  swapped-out session whose turn it is lets resident ones go first for at most `patience`,
  and only then may it push a runnable session out: fewer copies, a bounded wait;
- prefetch: fair turns know who runs next (the runnable session served least recently after
  the one starting its turn). If that one's KV is on the host and free budget holds it, its
  swap-in starts now, on the in-copy stream, while the current session computes (it evicts
  nobody). The Prefetch RPC does the same for a paused session the user is about to continue,
  and may make room as a resume does (`_make_resident`, `_victim`: least recently paused first)
  but evicting paused sessions only, never a runnable one nor one a Prefetch brought back in the
  last `prefetch_hold` seconds; it starts nothing unless the room can be had that way. Such a
  swap-in's SWAP_IN event says "prefetch";
- to make room, swap out paused sessions, least recently paused first, then idle running
  ones; if nothing can go, the session waits (a `waiting` event), it never runs out of memory;
- a device fault (a CUDA error poisons the whole context) fails every session, says why
  once, and stops all GPU work; the server then exits so its supervisor restarts it;
- housekeeping (leases) runs between pieces of model work, at most every `every` seconds.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import torch

from .engine import Engine
from .errors import DjinnError, exhausted, not_found, precondition, unavailable
from .events import EventHub, ServerEvent
from .faults import is_device_fault
from .host_pool import HostPool, HostPoolFull
from .memory import Ledger
from .session import CLOSED, FAILED, FINISHED, PAUSED, RUNNING, Session
from .span import pieces_to_next_check
from .stops import check_stop
from .swap import DEVICE, DISK, FROM_DISK, HOST, MOVING_IN, MOVING_OUT, NONE, ON_DISK, TO_DISK, SwapRecord, Swapper



class _Deferred(Exception):
    """A command that must wait until the session mid-pass yields the worker."""


class Scheduler:
    def __init__(self, engine: Engine, swapper: Swapper, pool: HostPool, ledger: Ledger, hub: EventHub,
                 swap_policy: str = "pressure", snapshot=None, quantum_ms: float = 0.0,
                 patience_ms: float = 200.0, prefetch_hold_ms: float = 5000.0):
        self.engine, self.swapper, self.pool, self.ledger, self.hub = engine, swapper, pool, ledger, hub
        self.swap_policy = swap_policy
        self.snapshot = snapshot or (lambda s: None)
        self.sessions: dict[int, Session] = {}
        self.lock = threading.RLock()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._running: Session | None = None   # the session whose pass is on the worker right now
        self._on_worker: list[Session] = []    # it and the sessions batched with it
        self.batched = {"pieces": 0, "rows": 0}
        self._eager_wait: set[int] = set()     # eager policy: paused sessions still to be swapped out   # pieces run for more than one session, and their rows
        self._deferred: list = []              # commands waiting for that pass to yield
        self.totals = {"out": [0, 0, 0.0], "in": [0, 0, 0.0]}   # count, bytes, ms
        self.quantum = quantum_ms / 1e3
        self.patience = patience_ms / 1e3   # longest a swapped-out runnable session yields to resident ones
        self.device_error = ""                 # set once the device failed: no more GPU work
        self.on_device_failed = lambda reason: None
        self._chores: list = []                # [fn, every_s, next_due]
        self._turns = 0                        # turn counter: who was served least recently
        # Prefetch. A session a Prefetch brought back is spared by other prefetches this long
        # (never by a resume: it is an ordinary resident paused session, evicted as any other).
        self.prefetch_hold = prefetch_hold_ms / 1e3
        self._held: dict[int, float] = {}      # session id -> when a Prefetch started bringing it back
        self._notes: dict[int, str] = {}       # session id -> text of the SWAP_IN of a prefetch in flight
        self._pending: dict[int, Session] = {}  # prefetches whose room is still being copied out
        self.prefetches = {"requested": 0, "next_in_line": 0}   # swap-ins started by each kind
        self._incoming = 0      # the session last asked to come in from the pool or disk (not spilled meanwhile)
        ledger.bind(lambda: sum(s.memory.device_bytes() + (s.history.device_bytes() if s.history else 0)
                                for s in list(self.sessions.values())))   # + time travel's device snapshots
        self.thread = threading.Thread(target=self._loop, name="djinn-gpu-worker", daemon=True)

    # ------------------------------------------------------------ public API (any thread)
    def start(self) -> None:
        self.thread.start()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self.thread.join(timeout=10)

    def submit(self, fn) -> Future:
        """Queues fn() for the worker thread (run between two pieces of model work). A future
        cancelled before the worker reaches it is skipped (its client went away)."""
        self.check_device()
        fut: Future = Future()
        self._commands.put((fn, fut))
        self._wake.set()
        return fut

    def check_device(self) -> None:
        if self.device_error:
            raise unavailable(f"the device failed ({self.device_error}); this server takes no more GPU work "
                              "and is shutting down: reconnect once it has been restarted")

    def call(self, fn, timeout: float = 120.0):
        """Runs fn() on the worker thread between two pieces of model work; returns its result."""
        return self.submit(fn).result(timeout=timeout)

    def every(self, seconds: float, fn) -> None:
        """Runs fn() on the worker thread about every `seconds` (leases, retirement)."""
        self._chores.append([fn, seconds, 0.0])

    def get(self, session_id: int) -> Session:
        s = self.sessions.get(session_id)
        if s is None:
            raise not_found(f"no session {session_id}" + ("" if session_id else " (session ids start at 1)"))
        return s

    def add(self, s: Session) -> None:
        """Registers a new session if the device and the host pool together hold every live
        session: sessions live on the device or in the pool, and a host region is reserved only
        on the way out, so admission counts both tiers, less one session's room: a session
        coming back keeps its region until its copy has landed, so the one leaving for it needs
        another (with sessions of one size the pool then always has it)."""
        self.check_device()
        size = s.memory.total_bytes
        need = self.ledger.fixed + size
        if need > self.ledger.budget:
            raise exhausted(f"a session of context {s.context} needs {size / 1e9:.3f} GB of KV and "
                            f"activations; with weights, workspace and overhead ({self.ledger.fixed / 1e9:.2f} GB) that "
                            f"exceeds the budget of {self.ledger.budget / 1e9:.2f} GB")
        with self.lock:
            device = self.ledger.budget - self.ledger.fixed
            pool = self.pool.capacity(size)
            # the disk tier counts only where the pool holds two such sessions: one coming back from
            # disk, one leaving the device for it (the pool is the staging area both ways)
            disk = (self.swapper.spill.capacity(size)
                    if self.swapper.spill is not None and pool >= 2 * size else 0)
            live = [v for v in self.sessions.values() if v.alive]
            held = sum(v.memory.total_bytes for v in live)
            if held + size > device + pool + disk - size:
                tiers = (f"the device budget ({device / 1e9:.2f} GB for sessions), the host pool ({pool / 1e9:.2f} GB)"
                         + (f" and the spill file ({disk / 1e9:.2f} GB)" if self.swapper.spill is not None else ""))
                raise exhausted(
                    f"no room for another session of {size / 1e9:.3f} GB: {len(live)} live sessions hold "
                    f"{held / 1e9:.2f} GB, and {tiers} hold {(device + pool + disk - size) / 1e9:.2f} GB of sessions "
                    "(less one session's room for a copy in flight); close sessions, or restart the server with a larger "
                    "--host-pool-gb, --spill-gb or --vram-budget-gb")
            s.state, s.ready_at = RUNNING, time.monotonic()
            self.sessions[s.id] = s
        self._publish("created", s)
        self._wake.set()

    # ------------------------------------------------------------ commands (worker thread)
    def resume(self, s: Session, step_kind: str = "") -> None:
        if s.state != PAUSED:
            raise precondition(f"session {s.id} is {s.state}, not paused")
        s.results.clear()
        s.step_kind, s.step_from_pass = step_kind, s.pass_index
        s.state, s.stop_reason, s.hit_ids, s.ready_at = RUNNING, "", [], time.monotonic()
        self._held.pop(s.id, None)
        self._pending.pop(s.id, None)   # runnable now: its turn brings it back (or the next-in-line prefetch)
        self._publish("resumed", s)
        if self._running is not None:   # mid-pass: maybe it is next in line after the session computing now
            self._prefetch_next(self._running)

    def prefetch(self, s: Session) -> str:
        """The Prefetch RPC (worker thread): the caller will continue paused `s` soon. If its KV
        is on the host, its swap-in starts now (async on CUDA), making room as a resume would but
        evicting paused sessions only (not running ones, not ones just prefetched). Returns what
        happened: "resident" (on the device or on its way: nothing to do), "started" (the swap-in
        is under way or done), "queued" (the evictions that make its room are still copying out:
        the swap-in starts as they land). No room that way: RESOURCE_EXHAUSTED, nothing evicted."""
        if s.state != PAUSED:
            raise precondition(f"session {s.id} is {s.state}, not paused: only a paused session can be prefetched "
                               "(a runnable one is brought back at its turn)")
        if s.id in self._pending:
            return "queued"
        if s.memory.location not in (HOST, MOVING_OUT) + ON_DISK:
            return "resident"
        if not self._room_for(s):
            raise exhausted(f"no room to prefetch session {s.id} ({s.memory.total_bytes / 1e9:.3f} GB): the VRAM "
                            "budget is held by running sessions and sessions prefetched in the last "
                            f"{self.prefetch_hold:g} s; nothing was evicted, and a Continue still brings it back")
        now = time.monotonic()
        s.paused_at = now       # a look is a use: the least recently paused go first, not this one
        self._held[s.id] = now
        return self._prefetch_in(s, "prefetch", "requested")

    def pause(self, s: Session) -> None:
        if s.state == RUNNING:
            s.pause_requested = True
        elif s.state != PAUSED:
            raise precondition(f"session {s.id} is {s.state}; only a running session can be paused")

    def _release(self, s: Session) -> None:
        """Frees a session's memory after any copy in flight has landed (and been reported)."""
        if s.memory.flight is not None:
            self._complete(s, block=True)
        self.swapper.free(s.memory)

    def _forget(self, s: Session) -> None:
        for marks in (self._held, self._notes, self._pending):
            marks.pop(s.id, None)
        if s.history is not None:
            s.history.clear()       # an ended session's snapshots go now, not at its retirement

    def close(self, s: Session, why: str = "") -> None:
        self._release(s)
        self._forget(s)
        s.state = CLOSED
        with self.lock:
            self.sessions.pop(s.id, None)
        self.ledger.note()
        self._publish("closed", s, text=why)

    def retire(self, s: Session) -> None:
        """Forgets an ended session (its memory is already free)."""
        self._forget(s)
        with self.lock:
            self.sessions.pop(s.id, None)
        self.ledger.note()

    # ------------------------------------------------------------ device faults (worker thread)
    def _device_failed(self, e: BaseException) -> None:
        """Once: every live session fails with the reason, one device_failed event, no more GPU work."""
        if self.device_error:
            return
        self.device_error = reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        with self.lock:
            live = [s for s in self.sessions.values() if s.alive]
        for s in live:
            s.state, s.error, s.ended_at = FAILED, f"device failed: {reason}", time.monotonic()
            s.memory.flight = None    # nothing on the device can be trusted or waited for now
            self._publish("error", s, text=s.error)
        self.hub.publish(ServerEvent(kind="device_failed", session_id=0, text=(
            f"the device failed ({reason}); {len(live)} session(s) failed with it; the server takes no more GPU "
            "work and exits so that it can be restarted")))
        self._drain_after_fault()
        self.on_device_failed(reason)

    def _drain_after_fault(self) -> None:
        """Refuses every queued command (UNAVAILABLE: see _execute) and waits; nothing touches the device."""
        self._running = None
        self._run_commands()
        self._idle(0.05)

    def bring_back(self, s: Session) -> None:
        """Makes a paused session's tensors resident (swap-in) so they can be read or written."""
        if s.state != PAUSED:
            raise precondition(f"session {s.id} is {s.state}; tensors exist only while it is paused")
        while not self._make_resident(s):
            if self._in_flight():
                self._finish_flights(block=True)
            elif self._running is not None:
                raise _Deferred()   # only the session mid-pass holds the room: retry when it yields
            else:
                raise unavailable(f"no room to bring session {s.id} back: the VRAM budget is held by sessions "
                                  "that cannot be swapped out right now")
        if s.memory.location == MOVING_IN:
            self._complete(s, block=True)

    # ------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stopping:
            try:
                if self.device_error:
                    self._drain_after_fault()
                    continue
                self._iteration()
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one failure
                if is_device_fault(e):
                    self._device_failed(e)
                    continue
                self.hub.publish(ServerEvent(kind="error", session_id=0, text=f"worker: {type(e).__name__}: {e}"))
                self._idle(0.01)

    def _iteration(self) -> None:
        self._run_commands()
        self._chores_due()
        self._finish_flights(block=False)
        if self._pending:
            self._retry_prefetches()
        if self._eager_wait:
            self._eager_swaps()
        s = self._pick()
        if s is None:
            self._idle(0.002 if self._in_flight() else 0.05)
            return
        try:
            # a runnable session may push out another runnable one only after waiting `patience`
            resident = self._make_resident(s, evict_running=time.monotonic() - s.ready_at >= self.patience)
        except torch.OutOfMemoryError as e:  # (a device fault propagates to _loop)
            # The allocator disagrees with the ledger (fragmentation): make room and retry.
            victim = self._victim(exclude=s)
            if victim is None:
                self._fail(s, e)
                return
            self._swap_out(victim)
            self._finish_flights(block=True)
            return
        except Exception as e:  # noqa: BLE001
            if is_device_fault(e):
                raise
            self._fail(s, e)
            return
        if not resident:
            if not self._in_flight() and not s.waiting:
                s.waiting = True
                self._publish("waiting", s, text="waiting for VRAM: every resident session is busy")
            other = self._pick(resident_only=True)
            if other is not None:
                self._run(other)   # it waits for room; whoever is already resident goes on meanwhile
            else:
                self._idle(0.002)
            return
        s.waiting = False
        self._prefetch_next(s)   # who runs after s: its swap-in overlaps s's compute
        self._run(s)

    def _idle(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _run_commands(self) -> None:
        if self._running is None and self._deferred:
            pending, self._deferred = self._deferred, []
            for fn, fut in pending:
                self._execute(fn, fut)
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                self._execute(fn, fut)

    def _execute(self, fn, fut: Future) -> None:
        if self.device_error:
            fut.set_exception(unavailable(f"the device failed ({self.device_error}); no more GPU work"))
            return
        try:
            fut.set_result(fn())
        except _Deferred:
            self._deferred.append((fn, fut))
        except DjinnError as e:
            fut.set_exception(e)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting RPC handler
            if is_device_fault(e):
                fut.set_exception(unavailable(f"the device failed: {type(e).__name__}: {e}"))
                raise   # to _loop: every session fails, the server stops taking GPU work
            fut.set_exception(e)

    def _chores_due(self) -> None:
        now = time.monotonic()
        for chore in self._chores:
            if now >= chore[2]:
                chore[2] = now + chore[1]
                chore[0]()

    def _pick(self, resident_only: bool = False) -> Session | None:
        """The runnable session served least recently. A resident one goes first while the one
        whose turn it is waits for a swap-in for less than `patience` (fewer copies, bounded wait)."""
        with self.lock:
            running = [s for s in self.sessions.values() if s.state == RUNNING]
        resident = [s for s in running if s.memory.location in (DEVICE, MOVING_IN)]
        if resident_only or not running:
            return min(resident, key=lambda s: (s.turn, s.id), default=None)
        first = min(running, key=lambda s: (s.turn, s.id))
        if any(v is first for v in resident) or not resident or time.monotonic() - first.ready_at >= self.patience:
            return first
        return min(resident, key=lambda s: (s.turn, s.id))

    def _worker_ids(self) -> set[int]:
        return {v.id for v in self._on_worker}

    def _others_runnable(self, batch: list[Session]) -> bool:
        with self.lock:
            return any(all(v is not b for b in batch) and v.state == RUNNING for v in self.sessions.values())

    def _batch(self, s: Session) -> list[Session]:
        """s and the runnable resident sessions at the same decode stop point (same layer and
        point), least recently served first, up to one block: they run as one batch.
        A prefill, or a server without batching (--batch-rows 1), runs alone."""
        eng = self.engine
        if eng.batch_rows <= 1 or not s.started or not eng.batchable(s):
            return [s]
        with self.lock:
            others = [v for v in self.sessions.values()
                      if v is not s and v.state == RUNNING and v.started and v.memory.location in (DEVICE, MOVING_IN)
                      and v.layer == s.layer and v.point == s.point and eng.batchable(v)]
        # one block: the others wait for their own turn (a second block in the same turn would
        # have to copy the first one's rows out of the registers after every piece)
        return [s] + sorted(others, key=lambda v: (v.turn, v.id))[:eng.batch_rows - 1]

    def _run(self, s: Session) -> None:
        """One turn of s, with the sessions batched with it: until each stops, ends its pass,
        finishes, or (with a quantum) the turn has run that long while a session outside it is
        runnable. A session that stops leaves the batch; the others go on. Commands are served
        between pieces."""
        batch = self._batch(s)
        self._running, self._on_worker = s, list(batch)
        self._turns += 1
        eng = self.engine
        t0 = time.monotonic()
        eng.lock.acquire()
        try:
            for v in batch:
                v.turn = self._turns
                self.swapper.await_in(v.memory)   # a prefetch's copy may still be in flight: its kernels wait for it
            if not s.started:
                eng.begin(s)
                if self._maybe_stop(s):
                    return
            while batch:
                # no stop can fire before the span's end: its pieces run without checks between them;
                # with a quantum, piece by piece (the turn may have to yield between any two)
                span = 1 if self.quantum else pieces_to_next_check(batch, eng.args.n_layers)
                tokens = eng.advance_span(batch, span)
                now = time.monotonic()
                going, ended = [], False
                for v, token in zip(batch, tokens):
                    v.last_run = now
                    if token is not None:
                        ended = True
                        self._publish("token", v, token=token, text=eng.tokenizer.token_text(token))
                        if v.state == FINISHED:
                            self._finish(v)
                            continue
                    if not self._maybe_stop(v) and token is None:
                        going.append(v)
                if len(batch) > 1:
                    self.batched["pieces"] += 1
                    self.batched["rows"] += len(batch)
                if ended:
                    return             # a pass ended: the turn ends (the batch ends its passes together)
                self._run_commands()   # may pause or close a session of the batch (never evict it: see _victim)
                batch = [v for v in going if v.state == RUNNING]
                if self.quantum and now - t0 >= self.quantum and self._others_runnable(self._on_worker):
                    return             # the turn is up mid-pass; they stay RUNNING, resume here later
        except Exception as e:  # noqa: BLE001 - one session's failure must not take the server down
            if is_device_fault(e):
                raise
            for v in batch:            # a batch's piece failed: each of its sessions is in an unknown state
                if v.alive:
                    self._fail(v, e)
        finally:
            done = time.monotonic()
            for v in self._on_worker:
                if v.alive:
                    eng.settle(v)      # its activations leave the block's registers
                    v.ready_at = done  # if still runnable, it waits for its next turn from now
            self._running, self._on_worker = None, []
            eng.lock.release()

    def _maybe_stop(self, s: Session) -> bool:
        def log(client, bp_id, text):   # a logpoint's line: no snapshot, to its client only (hits)
            self.hub.publish(ServerEvent(kind="output", session_id=s.id, owner=s.owner, text=text,
                                         hits=((client, bp_id),)))
        if s.history is not None:   # time travel: this point's state, as it arrived (runtime/history.py)
            s.history.record(s, self.ledger.fits)
            self.ledger.note()      # its device snapshots count in the budget
        stop = check_stop(self.engine, s, log)
        if not stop:
            return False
        reason, hits, message = stop
        self.engine.settle(s)   # a paused session's tensors are its own (inspection, swaps)
        s.state, s.stop_reason, s.hit_ids, s.paused_at = PAUSED, reason, hits, time.monotonic()
        self._publish("stopped", s, stop_reason=reason, text=message, hits=tuple(hits))
        if self.swap_policy == "eager":
            self._swap_out(s)
            if s.memory.location == DEVICE:
                self._eager_wait.add(s.id)   # no pinned room yet: it leaves once there is
        return True

    def _eager_swaps(self) -> None:
        """Eager policy: a paused session leaves the device at its stop; one whose region could
        not be had then (no pinned room yet) leaves as soon as it can."""
        for sid in list(self._eager_wait):
            v = self.sessions.get(sid)
            if v is None or v.state != PAUSED or v.memory.location != DEVICE:
                self._eager_wait.discard(sid)
            elif v.id not in self._worker_ids() and self._region_for(v):
                self._eager_wait.discard(sid)
                self._swap_out(v)

    def _finish(self, s: Session) -> None:
        s.ended_at = time.monotonic()
        self._release(s)
        self._forget(s)
        self.ledger.note()
        self._publish("finished", s, text=s.text)

    def _fail(self, s: Session, e: Exception) -> None:
        s.state, s.error, s.ended_at = FAILED, f"{type(e).__name__}: {e}", time.monotonic()
        try:
            self._release(s)
        except Exception:  # noqa: BLE001 - the session is already failed; free what can be freed
            self.swapper.free(s.memory)
        self._forget(s)
        self.ledger.note()
        self._publish("error", s, text=s.error)

    # ------------------------------------------------------------ memory
    def _make_resident(self, s: Session, evict_running: bool = True, prefetch: bool = False) -> bool:
        """True once s is on the device or on its way (MOVING_IN); False if it must wait for room.
        `prefetch`: the swap-in is a prefetch's (the compute stream does not wait for it; victims
        exclude sessions just prefetched)."""
        mem = s.memory
        if mem.location in (DEVICE, MOVING_IN):
            return True
        if mem.location == MOVING_OUT:
            self._complete(s, block=True)
        if mem.location in ON_DISK or mem.location == HOST:
            self._incoming = s.id   # on its way in: not to be spilled meanwhile
        if mem.location in ON_DISK:
            self._from_disk(s)
            return False         # back in the pool first: its read lands, then this runs again
        need = mem.total_bytes
        while not self.ledger.fits(need):
            leaving = sum(v.memory.device_bytes() for v in list(self.sessions.values()) if v.memory.location == MOVING_OUT)
            if leaving and self.ledger.accounted() - leaving + need <= self.ledger.budget:
                return False     # copies in flight already make enough room: evict nobody else
            victim = self._victim(exclude=s, running_too=evict_running, spare_held=prefetch)
            if victim is None:
                return False
            self._swap_out(victim)
        if mem.location == NONE:
            self.swapper.allocate(mem)
        else:
            self._record(s, self.swapper.swap_in(mem, wait=not prefetch))
        self.ledger.note()
        return True

    def _victim(self, exclude: Session, running_too: bool = True, spare_held: bool = False) -> Session | None:
        """Who leaves the device: never `exclude`, nor the session mid-pass on the worker (a
        command served between two of its pieces may need room for another session); with
        `spare_held` (a prefetch making room), never a session a Prefetch just brought back; nor
        one whose host region is in a chunk still being pinned (the copy would hold the worker,
        and every user's compute, until the chunk is in: the session needing room waits instead)."""
        with self.lock:
            resident = [v for v in self.sessions.values()
                        if v is not exclude and v is not self._running and v.id not in self._worker_ids()
                        and v.memory.location == DEVICE]
        paused = sorted((v for v in resident if v.state == PAUSED and not (spare_held and self._is_held(v))),
                        key=lambda v: v.paused_at)
        idle = sorted((v for v in resident if v.state == RUNNING), key=lambda v: v.last_run) if running_too else []
        for v in paused + idle:
            if self._region_for(v):
                return v
        return None

    def _region_for(self, v: Session) -> bool:
        """Reserves v's host region for a swap-out, in a chunk a copy can use now (pinned, or
        plain memory once pinning stopped short): a copy into a chunk still being pinned would
        hold the worker, and every user's compute, until the chunk is in. A full pool sends its
        coldest session to disk (if there is a disk tier): the region is free once that lands."""
        mem = v.memory
        if mem.host_offset >= 0:
            return True
        hit = self._host_region(mem.total_bytes, exclude=v)
        if hit is None:
            return False
        mem.host_offset, mem.host_size = hit
        return True

    # ------------------------------------------------------------ the disk tier
    def _host_region(self, size: int, exclude: Session) -> tuple[int, int] | None:
        hit = self.pool.try_reserve(size, ready_only=True)
        if hit is None and self.swapper.spill is not None:
            if self._pool_to_device(exclude):   # on the CPU that copy is done and its region free already
                hit = self.pool.try_reserve(size, ready_only=True)
            else:
                self._spill_coldest(exclude)
        return hit

    def _settled_in_pool(self, exclude: Session) -> list[Session]:
        """Live sessions in the host pool with no copy or disk move in flight, but `exclude`."""
        with self.lock:
            return [v for v in self.sessions.values() if v is not exclude and v.alive and v.memory.location == HOST
                    and v.memory.flight is None and v.memory.move is None]

    def _pool_to_device(self, exclude: Session) -> bool:
        """Frees a pool region by bringing a session from the pool onto the device where free
        budget holds it (runnable ones first): the one free session's room that admission keeps
        may be on the device, and a copy in is cheaper than a write to disk."""
        for v in sorted(self._settled_in_pool(exclude), key=lambda v: (v.state != RUNNING, v.turn, v.id)):
            if self.ledger.fits(v.memory.total_bytes):
                self._record(v, self.swapper.swap_in(v.memory, wait=False))
                self.ledger.note()
                return True
        return False

    def _spill_coldest(self, exclude: Session) -> None:
        """Starts moving the coldest session in the host pool to disk: paused longest first, then
        runnable ones served least recently. One move at a time: the region it frees is what the
        caller waits for (it retries once the write lands)."""
        with self.lock:
            if any(v.memory.location == TO_DISK for v in self.sessions.values()):
                return
        on_host = [v for v in self._settled_in_pool(exclude) if v.id not in self._pending and v.id != self._incoming]
        paused = sorted((v for v in on_host if v.state == PAUSED), key=lambda v: v.paused_at)
        runnable = sorted((v for v in on_host if v.state == RUNNING), key=lambda v: (v.turn, v.id), reverse=True)
        for v in paused + runnable:   # a runnable one: the one whose turn comes last
            if self.swapper.spill_out(v.memory):
                return

    def _from_disk(self, s: Session, make_room: bool = True) -> None:
        """Starts bringing a spilled session back into the host pool (if its read is not under way);
        without `make_room`, only into free pool room (nobody moves for it)."""
        mem = s.memory
        if mem.location != DISK:
            return                # on its way (to disk: it comes back once that write lands)
        hit = (self._host_region(mem.disk_size, exclude=s) if make_room
               else self.pool.try_reserve(mem.disk_size, ready_only=True))
        if hit is not None:
            self.swapper.spill_in(mem, hit)

    # ------------------------------------------------------------ prefetch
    def _is_held(self, v: Session) -> bool:
        t = self._held.get(v.id)
        return t is not None and time.monotonic() - t < self.prefetch_hold

    def _room_for(self, s: Session, evict: bool = True) -> bool:
        """Whether a prefetch of s can have its room: free budget, plus what is already being
        copied out, plus (with `evict`) the paused sessions it may evict (_victim with spare_held,
        running_too off)."""
        free = self.ledger.budget - self.ledger.accounted()
        if not evict:
            return free >= s.memory.total_bytes
        with self.lock:
            others = [v for v in self.sessions.values() if v is not s]
        leaving = sum(v.memory.device_bytes() for v in others if v.memory.location == MOVING_OUT)
        evictable = sum(v.memory.device_bytes() for v in others
                        if v is not self._running and v.id not in self._worker_ids() and v.memory.location == DEVICE
                        and v.state == PAUSED and not self._is_held(v))
        if s.memory.location == MOVING_OUT:   # its own copy out is counted as on the device until it lands
            free += s.memory.device_bytes()
        return free + leaving + evictable >= s.memory.total_bytes

    def _prefetch_in(self, s: Session, note: str, kind: str) -> str:
        """Starts s's swap-in as a prefetch (its SWAP_IN text is `note`); "started", or "queued"
        when the evictions that make its room are still in flight (retried as they land)."""
        self._notes[s.id] = note
        try:
            started = self._make_resident(s, evict_running=False, prefetch=True)
        except torch.OutOfMemoryError:   # the allocator disagrees with the ledger: a prefetch is only a hint
            started = False
        finally:
            if s.memory.location != MOVING_IN:   # landed (CPU: _record took the note) or not started
                self._notes.pop(s.id, None)
        if started:
            self._pending.pop(s.id, None)
            self.prefetches[kind] += 1
            return "started"
        if self._in_flight():
            self._pending[s.id] = s
            return "queued"
        self._pending.pop(s.id, None)
        return "resident" if s.memory.location == DEVICE else "no room"

    def _retry_prefetches(self) -> None:
        for sid, s in list(self._pending.items()):
            if s.memory.location in ON_DISK and s.alive:
                self._from_disk(s)    # on its way back from disk: the pool first, then the device
                continue
            if s.state == PAUSED and s.memory.location == HOST:
                self._prefetch_in(s, "prefetch", "requested")
            elif s.state == RUNNING and s.memory.location == HOST:
                self._prefetch_in(s, "prefetch: next in line", "next_in_line")
            else:
                self._pending.pop(sid, None)

    def _prefetch_next(self, current: Session) -> None:
        """Fair turns: after `current`, the runnable session served least recently runs. If its
        KV is on the host, start its swap-in now so that it overlaps current's compute, when free
        budget holds it. It evicts nobody: the least recently paused session it would push out is
        the one a client continuing the oldest stop first resumes next (on the H200 that churn
        raised Exp 3's swaps from 232 to 368 each way for no time won); its turn makes room then."""
        with self.lock:
            others = [v for v in self.sessions.values() if v.state == RUNNING and v is not current]
        nxt = min(others, key=lambda v: (v.turn, v.id), default=None)
        if nxt is not None and nxt.memory.location == DISK:   # read it back into free pool room now (evicting nobody)
            self._from_disk(nxt, make_room=False)
            return
        if nxt is None or nxt.memory.location != HOST or nxt.id in self._pending or not self._room_for(nxt, evict=False):
            return
        try:
            self._prefetch_in(nxt, "prefetch: next in line", "next_in_line")
        except Exception as e:  # noqa: BLE001 - a hint must not cost the turn of the session about to run
            if is_device_fault(e):
                raise
            self.hub.publish(ServerEvent(kind="error", session_id=0, text=f"prefetch of session {nxt.id}: "
                                                                          f"{type(e).__name__}: {e}"))

    def _swap_out(self, s: Session) -> None:
        if s.memory.location == DEVICE and self._region_for(s):
            self._record(s, self.swapper.swap_out(s.memory))

    def _in_flight(self) -> bool:
        return any(s.memory.flight is not None or s.memory.move is not None for s in list(self.sessions.values()))

    def _finish_flights(self, block: bool) -> bool:
        done = False
        for s in list(self.sessions.values()):
            if s.memory.flight is not None or s.memory.move is not None:
                done |= self._complete(s, block)
        return done

    def _complete(self, s: Session, block: bool) -> bool:
        rec = self.swapper.poll(s.memory, block=block)
        self._record(s, rec)
        if s.memory.move is not None:
            try:
                disk = self.swapper.poll_disk(s.memory, block=block)
            except OSError as e:   # the session is as it was before the move (swap.poll_disk)
                self.hub.publish(ServerEvent(kind="error", session_id=0, text=f"spill file, session {s.id}: "
                                                                              f"{type(e).__name__}: {e}"))
                return True
            self._record(s, disk)
            rec = rec or disk
        return rec is not None

    def _record(self, s: Session, rec: SwapRecord | None) -> None:
        if rec is None:
            return
        if rec.direction.startswith("spill_"):   # the spill file keeps its own totals
            self._publish("spill", s, nbytes=rec.nbytes, ms=rec.ms,
                          text="to disk" if rec.direction == "spill_out" else "from disk")
            return
        t = self.totals[rec.direction]
        t[0], t[1], t[2] = t[0] + 1, t[1] + rec.nbytes, t[2] + rec.ms
        if rec.direction == "out":
            s.swap_outs, s.last_swap_out_ms = s.swap_outs + 1, rec.ms
        else:
            s.swap_ins, s.last_swap_in_ms = s.swap_ins + 1, rec.ms
        self.ledger.note()
        note = self._notes.pop(s.id, "") if rec.direction == "in" else ""
        self._publish("swap_" + rec.direction, s, nbytes=rec.nbytes, ms=rec.ms, text=note)

    def _publish(self, kind: str, s: Session, **kw) -> None:
        self.hub.publish(ServerEvent(kind=kind, session_id=s.id, snapshot=self.snapshot(s), owner=s.owner, **kw))


