"""The gRPC service (asyncio): who is calling, which sessions they may see, handing work to
the GPU worker, mapping every error to a specific status.

Handlers never touch the GPU: they queue closures on the worker (`_work`) and await them, so
an open stream or a slow call costs a coroutine, not a thread. Ownership is decided in one
place (`_session`, `Identity.may_see`): another user's session is NOT_FOUND, as if absent.
"""
from __future__ import annotations

import asyncio
import functools
import sys
import time
import traceback

import grpc

from ..inspect.tensors import iter_chunks
from ..runtime import completions, faults, history, tensor_ops
from ..runtime.errors import DjinnError, invalid, not_found
from ..runtime.session import Session, TrapSpec
from ..runtime.stops import data_breakpoint_scope, validate_breakpoint, validate_data_breakpoints
from ..runtime.swap import SessionMemory
from ..v1 import djinn_pb2 as pb
from ..v1 import djinn_pb2_grpc as pb_grpc
from . import convert
from .auth import Identity
from .state import ServerState
from .streams import Fanout

MAX_CHUNK = 1 << 20
SERVICE = pb.DESCRIPTOR.services_by_name["Djinn"]
FAULT_EXPRESSION = "__device_fault__"   # only with --test-fault-injection (the language forbids '__')


async def _abort(context, code: str, message: str):
    await context.abort(getattr(grpc.StatusCode, code, grpc.StatusCode.INTERNAL), message)


def _internal(fn_name: str, e: BaseException) -> str:
    print(f"djinn: internal error in {fn_name}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    return f"internal error in {fn_name}: {type(e).__name__}: {e}"


class Undecodable:
    """A request whose bytes are not a valid message (grpc itself would answer UNKNOWN)."""

    def __init__(self, message_name: str, error: Exception):
        self.why = f"the request is not a valid {message_name} message: {error}"


def _decoder(cls):
    def decode(data: bytes):
        try:
            return cls.FromString(data)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
            return Undecodable(cls.DESCRIPTOR.full_name, e)
    return decode


def _encode(msg) -> bytes:
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def add_to_server(service: "DjinnService", server) -> None:
    """Registers every method of djinn.v1.Djinn, as the generated code would, except that a
    request that cannot be decoded reaches the handler (INVALID_ARGUMENT, not UNKNOWN) and a
    stream may send bytes encoded once for all its subscribers."""
    handlers = {}
    for m in SERVICE.methods:
        kind = grpc.unary_stream_rpc_method_handler if m.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[m.name] = kind(getattr(service, m.name), request_deserializer=_decoder(getattr(pb, m.input_type.name)),
                                response_serializer=_encode)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(SERVICE.full_name, handlers)


def rpc(fn):
    """Every failure becomes a specific status with its message; never UNKNOWN, never a crash."""
    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            if isinstance(request, Undecodable):
                raise invalid(request.why)
            return await fn(self, request, context)
        except DjinnError as e:
            await _abort(context, e.code, str(e))
        except (TimeoutError, asyncio.TimeoutError):
            await _abort(context, "DEADLINE_EXCEEDED", "the GPU worker did not answer in time")
        except Exception as e:  # noqa: BLE001 - a bug must still answer with a status that says what
            await _abort(context, "INTERNAL", _internal(fn.__name__, e))
    return wrapper


def stream_rpc(fn):
    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            if isinstance(request, Undecodable):
                raise invalid(request.why)
            async for msg in fn(self, request, context):
                yield msg
        except DjinnError as e:
            await _abort(context, e.code, str(e))
        except (TimeoutError, asyncio.TimeoutError):
            await _abort(context, "DEADLINE_EXCEEDED", "the GPU worker did not answer in time")
        except Exception as e:  # noqa: BLE001
            await _abort(context, "INTERNAL", _internal(fn.__name__, e))
    return wrapper


def _merge_traps(traps) -> TrapSpec:
    spikes = [t.norm_spike for t in traps if t.norm_spike > 0]
    return TrapSpec(nan=any(t.nan for t in traps), inf=any(t.inf for t in traps), norm_spike=min(spikes, default=0.0))


class DjinnService(pb_grpc.DjinnServicer):
    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop | None = None):
        self.state = state
        self.sched = state.scheduler
        self.engine = state.engine
        self.users, self.clients = state.users, state.clients
        self.fanout = Fanout(state.hub, loop or asyncio.get_event_loop(), state.opts.subscriber_queue)

    # ------------------------------------------------------------ who, and what they may touch
    def _who(self, context) -> Identity:
        who = self.users.identify(context.invocation_metadata())
        self.clients.seen(who.key)
        return who

    def _session(self, who: Identity, session_id: int) -> Session:
        s = self.sched.sessions.get(session_id)
        if s is None or not who.may_see(s.owner):
            raise not_found(f"no session {session_id}" + ("" if session_id else " (session ids start at 1)"))
        self._hold(who, s)
        return s

    def _hold(self, who: Identity, s: Session) -> None:
        if who.user == s.owner:      # an admin looking does not keep someone's session alive
            s.holders.add(who.key)
        s.touched = time.monotonic()

    async def _work(self, fn, timeout: float = 120.0):
        return await asyncio.wait_for(asyncio.wrap_future(self.sched.submit(fn)), timeout)

    async def _paused_work(self, who: Identity, session_id: int, fn):
        s = self._session(who, session_id)

        def work():
            self.sched.bring_back(s)
            return fn(s)
        return await self._work(work)

    # ------------------------------------------------------------ info and sessions
    @rpc
    async def GetInfo(self, request, context):
        return self.state.info(self._who(context))

    @rpc
    async def CreateSession(self, r, context):
        who = self._who(context)
        self.sched.check_device()
        args, tok = self.engine.args, self.engine.tokenizer
        if r.prompt_tokens:
            tokens = list(r.prompt_tokens)
            bad = [t for t in tokens if not 0 <= t < args.vocab_size]
            if bad:
                raise invalid(f"prompt token {bad[0]} is outside the vocabulary 0..{args.vocab_size - 1}")
        elif r.prompt:
            if len(r.prompt) > 1_000_000:
                raise invalid(f"prompt of {len(r.prompt)} characters; the limit is 1000000")
            tokens = tok.encode(r.prompt)
        else:
            raise invalid("a session needs a prompt (text) or prompt_tokens")
        max_new = r.max_new_tokens or 8
        if max_new < 1 or max_new > 100_000:
            raise invalid(f"max_new_tokens must be in 1..100000, got {max_new}")
        need = len(tokens) + max_new - 1      # the last token is sampled, never fed back
        if r.context < 0:
            raise invalid(f"context must be >= 0 (0 = prompt + max_new_tokens), got {r.context}")
        context_len = r.context or need
        if context_len > self.engine.max_context:
            raise invalid(f"context {context_len} exceeds the server's --max-context {self.engine.max_context}")
        if need > context_len:
            raise invalid(f"prompt of {len(tokens)} tokens plus {max_new} new tokens needs a context of {need}, "
                          f"but the session asked for {context_len}")
        if len(r.label) > 200:
            raise invalid(f"label of {len(r.label)} characters; the limit is 200")
        bps = convert.breakpoints_from_pb(r.breakpoints)
        for b in bps:
            why = validate_breakpoint(b, args.n_layers)
            if why:
                raise invalid(f"breakpoint {b.id}: {why}")
        dbs = self._data_breakpoints(r.data_breakpoints)
        quota = self.state.opts.max_sessions_per_user
        if quota:
            with self.sched.lock:
                mine = sum(1 for s in self.sched.sessions.values() if s.owner == who.user and s.alive)
            if mine >= quota:
                raise DjinnError("RESOURCE_EXHAUSTED", f"user '{who.user}' already has {mine} live sessions, the "
                                 f"limit (--max-sessions-per-user {quota}); close some first")
        mem = SessionMemory(kv_shape=(args.n_layers, 2, args.n_kv_heads, context_len, args.head_dim),
                            dtype=self.engine.dtype, act_capacity=self.state.act_bytes(context_len))
        traps = convert.traps_from_pb(r.traps)
        most = int(self.state.opts.history_mb * (1 << 20))
        if r.history_bytes < 0 or r.history_bytes > most:
            raise invalid(f"history_bytes must be in 0..{most} (the server's --history-mb; 0 = that), "
                          f"got {r.history_bytes}")
        s = Session(prompt_tokens=tokens, max_new_tokens=max_new, context=context_len, memory=mem,
                    prompt=r.prompt, label=r.label, stop_on_entry=r.stop_on_entry, breakpoints={who.key: bps},
                    traps=traps, owner=who.user, creator=who.key)
        s.client_traps[who.key] = traps
        if r.time_travel:
            s.history = history.History(cap_bytes=r.history_bytes or most)
        if dbs:
            s.data_breakpoints[who.key] = dbs
        s.holders.add(who.key)
        self.sched.add(s)   # its host region never waits for pinning (only a later copy into it may)
        return convert.session_info(s, who.key)

    @rpc
    async def ListSessions(self, request, context):
        who = self._who(context)
        with self.sched.lock:
            sessions = [s for s in self.sched.sessions.values() if who.may_see(s.owner)]
        for s in sessions:
            self._hold(who, s)     # listing is how a client (re-)attaches
        return pb.ListSessionsResponse(sessions=[convert.session_info(s, who.key) for s in sessions])

    @rpc
    async def GetSession(self, r, context):
        who = self._who(context)
        return convert.session_info(self._session(who, r.session_id), who.key)

    @rpc
    async def CloseSession(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id)
        why = "closed by its owner" if who.user == s.owner else f"closed by admin '{who.user}'"
        await self._work(lambda: self.sched.close(s, why=why) if s.id in self.sched.sessions else None)
        return convert.session_info(s, who.key)

    @rpc
    async def SetBreakpoints(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id)
        bps = convert.breakpoints_from_pb(r.breakpoints)
        statuses, valid = [], []
        for b in bps:
            why = validate_breakpoint(b, self.engine.args.n_layers)
            statuses.append(pb.BreakpointStatus(id=b.id, verified=not why, message=why, layer=b.layer,
                                                point=convert.POINT_TO_PB[b.point]))
            if not why:
                valid.append(b)
        traps = convert.traps_from_pb(r.traps)

        def apply():
            mine = s.breakpoints.get(who.key, [])
            key = lambda b: (b.id, b.layer, b.point, b.condition, b.hit_condition, b.log_message)  # noqa: E731
            old = {key(b): b.hits for b in mine}
            for b in valid:   # an unchanged breakpoint keeps its hit count
                b.hits = old.get(key(b), 0)
            s.breakpoints[who.key] = valid   # this client's set only: other windows keep theirs
            s.client_traps[who.key] = traps
            s.traps = _merge_traps(s.client_traps.values())
        await self._work(apply)
        return pb.SetBreakpointsResponse(breakpoints=statuses)

    @staticmethod
    def _data_breakpoints(dbs_pb):
        dbs = convert.data_breakpoints_from_pb(dbs_pb)
        why = validate_data_breakpoints(dbs)
        if why:
            raise invalid(why)
        return dbs

    @rpc
    async def SetDataBreakpoints(self, r, context):
        """Replaces this client's data breakpoints of the session; invalid: INVALID_ARGUMENT, nothing changes."""
        who = self._who(context)
        s = self._session(who, r.session_id)
        dbs = self._data_breakpoints(r.breakpoints)

        def apply():
            old = {d.key(): d for d in s.data_breakpoints.get(who.key, [])}
            for d in dbs:    # an unchanged one keeps its hit count and what it was at the last check
                if d.key() in old:
                    d.hits, d.last = old[d.key()].hits, old[d.key()].last
            if dbs:
                s.data_breakpoints[who.key] = dbs
            else:
                s.data_breakpoints.pop(who.key, None)
        await self._work(apply)
        return pb.SetDataBreakpointsResponse(breakpoints=[
            pb.DataBreakpointStatus(id=d.id, verified=True, tensor=d.tensor, message=data_breakpoint_scope(d)) for d in dbs])

    @rpc
    async def Complete(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id) if r.session_id else None
        d = await self._work(lambda: completions.complete(self.engine, s, r.text, r.column))
        return pb.CompleteResponse(items=[pb.CompletionItem(**i) for i in d["items"]], start=d["start"],
                                   length=d["length"])

    @rpc
    async def Detach(self, r, context):
        who = self._who(context)

        def work():
            removed, closed = 0, []
            with self.sched.lock:
                sessions = list(self.sched.sessions.values())
            for s in sessions:
                removed += len(s.breakpoints.pop(who.key, None) or ())
                removed += len(s.data_breakpoints.pop(who.key, None) or ())
                if s.client_traps.pop(who.key, None) is not None:
                    s.traps = _merge_traps(s.client_traps.values())
                s.holders.discard(who.key)
                if r.terminate and s.creator == who.key and s.alive:
                    self.sched.close(s, why="its client detached with terminate")
                    closed.append(s.id)
            return pb.DetachResponse(closed_session_ids=closed, breakpoints_removed=removed)
        return await self._work(work)

    # ------------------------------------------------------------ execution control
    @rpc
    async def Continue(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id)
        await self._work(lambda: self.sched.resume(s))
        return convert.session_info(s, who.key)

    @rpc
    async def Step(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id)
        kind = convert.STEP_FROM_PB.get(r.kind)
        if kind is None:
            raise invalid(f"unknown step kind {r.kind}")
        await self._work(lambda: self.sched.resume(s, kind))
        return convert.session_info(s, who.key)

    @rpc
    async def Pause(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id)
        await self._work(lambda: self.sched.pause(s))
        return convert.session_info(s, who.key)

    @rpc
    async def Prefetch(self, r, context):
        """A hint: the caller will continue this paused session soon. Its swap-in starts now (see
        Scheduler.prefetch); the answer does not wait for the copy (its SWAP_IN event says "prefetch")."""
        who = self._who(context)
        s = self._session(who, r.session_id)
        await self._work(lambda: self.sched.prefetch(s))
        return convert.session_info(s, who.key)

    @rpc
    async def StepBack(self, r, context):
        """Time travel (runtime/history.py): the paused session goes back to an earlier stop point of its pass."""
        who = self._who(context)
        s = self._session(who, r.session_id)
        to = {pb.STEP_BACK_TARGET_UNSPECIFIED: history.PREVIOUS_POINT, pb.STEP_BACK_TARGET_PREVIOUS_POINT:
              history.PREVIOUS_POINT, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT: history.PREVIOUS_BREAKPOINT}.get(r.to)
        if to is None:
            raise invalid(f"unknown step-back target {r.to}")
        await self._work(lambda: history.go_back(self.sched, s, to))
        return convert.session_info(s, who.key)

    @rpc
    async def RestartPass(self, r, context):
        who = self._who(context)
        s = self._session(who, r.session_id)
        await self._work(lambda: history.go_back(self.sched, s, history.RESTART))
        return convert.session_info(s, who.key)

    # ------------------------------------------------------------ tensors
    @rpc
    async def ListTensors(self, r, context):
        tensors = await self._paused_work(self._who(context), r.session_id,
                                          lambda s: tensor_ops.list_tensors(self.engine, s))
        return pb.TensorList(tensors=[convert.tensor_summary(d) for d in tensors])

    @stream_rpc
    async def GetTensor(self, r, context):
        if r.chunk_bytes < 0 or r.chunk_bytes > MAX_CHUNK:
            raise invalid(f"chunk_bytes must be in 1..{MAX_CHUNK} (0 = {MAX_CHUNK}), got {r.chunk_bytes}")
        dims = convert.dims(r.slice)
        summ, shape, dtype, data = await self._paused_work(
            self._who(context), r.session_id,
            lambda s: tensor_ops.get_tensor(self.engine, s, r.name, dims, r.summary_only))
        first = True
        for offset, chunk in iter_chunks(data, r.chunk_bytes or MAX_CHUNK):
            msg = pb.TensorChunk(offset=offset, data=bytes(chunk), total_bytes=len(data))
            if first:
                msg.summary.CopyFrom(convert.tensor_summary(summ))
                msg.slice_shape.extend(shape)
                msg.dtype = dtype
                first = False
            yield msg

    @rpc
    async def SetTensor(self, r, context):
        mode = "add" if r.mode == pb.WRITE_MODE_ADD else "replace"
        dims, shape = convert.dims(r.slice), list(r.shape)
        scalar = r.scalar if r.has_scalar else None
        def write(s):
            out = tensor_ops.set_tensor(self.engine, s, r.name, dims, mode, r.dtype, shape, r.data, scalar)
            if s.history is not None:
                s.history.edited(s)   # time travel: a re-run through this point keeps the edit
            return out
        d = await self._paused_work(self._who(context), r.session_id, write)
        return convert.tensor_summary(d)

    @rpc
    async def Evaluate(self, r, context):
        if len(r.expression) > 2000:
            raise invalid(f"expression of {len(r.expression)} characters; the limit is 2000")
        who = self._who(context)
        if self.state.opts.fault_injection and r.expression.strip() == FAULT_EXPRESSION:
            self._session(who, r.session_id)
            await self._work(lambda: faults.inject(self.engine.device))
        d = await self._paused_work(who, r.session_id,
                                    lambda s: tensor_ops.evaluate_expression(self.engine, s, r.expression))
        return convert.evaluate_response(d)

    @rpc
    async def LogitLens(self, r, context):
        pos = r.position if r.HasField("position") else -1
        top = await self._paused_work(self._who(context), r.session_id, lambda s: tensor_ops.logit_lens(
            self.engine, s, r.top_k, r.tensor, pos))
        return pb.LogitLensResponse(top=[pb.TokenProb(**d) for d in top])

    # ------------------------------------------------------------ streams
    def _wire(self, ev, who: Identity) -> bytes:
        """The event's bytes, encoded once for every subscriber (a stop is re-encoded per client:
        each sees only its own breakpoint ids)."""
        if ev.wire is None:     # a hub without an encoder (tests)
            ev.wire = convert.event(ev).SerializeToString()
        if not ev.hits or ev.kind == "output":   # an output goes to its client only (streams.Subscriber.wants)
            return ev.wire
        msg = pb.Event.FromString(ev.wire)
        msg.session.hit_breakpoint_ids.extend(i for key, i in ev.hits if key == who.key)
        return msg.SerializeToString()

    def _lagged(self, seq: int, why: str) -> pb.Event:
        return pb.Event(seq=seq, time=time.time(), kind=pb.EVENT_KIND_LAGGED, text=why)

    @stream_rpc
    async def Events(self, r, context):
        who = self._who(context)
        if r.session_id:
            self._session(who, r.session_id)
        with self.clients.streaming(who.key):
            sub, replay, missing = self.fanout.subscribe(who, r.session_id, r.since_seq)
            try:
                if missing:
                    yield self._lagged(r.since_seq, f"events after seq {r.since_seq} are no longer all retained: "
                                                    "subscribe again with since_seq and re-list the sessions")
                    return
                for ev in replay:
                    yield self._wire(ev, who)
                while not self.state.stopping:
                    while sub.queue:
                        yield self._wire(sub.queue.popleft(), who)
                    if sub.lagged_at is not None:
                        yield self._lagged(sub.lagged_at, f"this subscriber fell {sub.limit} events behind: "
                                                          f"subscribe again with since_seq={sub.lagged_at}")
                        return
                    sub.wake.clear()
                    try:
                        await asyncio.wait_for(sub.wake.wait(), 0.5)
                    except asyncio.TimeoutError:
                        pass
            finally:
                self.fanout.unsubscribe(sub)

    @stream_rpc
    async def Telemetry(self, r, context):
        who = self._who(context)
        interval = max(r.interval_ms or 100.0, 10.0) / 1e3
        loop = asyncio.get_running_loop()
        with self.clients.streaming(who.key):
            next_t, first = loop.time(), True
            while not self.state.stopping:
                yield self.state.telemetry_wire(who, fresh=first)
                first = False
                next_t = max(next_t + interval, loop.time())
                await asyncio.sleep(next_t - loop.time())
