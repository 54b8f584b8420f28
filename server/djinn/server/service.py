"""The gRPC service: validates requests, hands work to the GPU worker, maps errors to statuses."""
from __future__ import annotations

import functools
import queue
import time

import grpc

from ..runtime import tensor_ops
from ..runtime.errors import DjinnError, invalid
from ..runtime.session import Session
from ..runtime.stops import validate_breakpoint
from ..runtime.swap import SessionMemory
from ..inspect.tensors import iter_chunks
from ..v1 import djinn_pb2 as pb
from ..v1 import djinn_pb2_grpc as pb_grpc
from . import convert
from .state import ServerState

MAX_CHUNK = 1 << 20


def rpc(fn):
    """Turns runtime errors into gRPC statuses with their message; never a crash."""
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            self.state.check_token(context)
            return fn(self, request, context)
        except DjinnError as e:
            context.abort(getattr(grpc.StatusCode, e.code), str(e))
        except TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the GPU worker did not answer in time")
    return wrapper


def stream_rpc(fn):
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            self.state.check_token(context)
            yield from fn(self, request, context)
        except DjinnError as e:
            context.abort(getattr(grpc.StatusCode, e.code), str(e))
    return wrapper


class DjinnService(pb_grpc.DjinnServicer):
    def __init__(self, state: ServerState):
        self.state = state
        self.sched = state.scheduler
        self.engine = state.engine

    def _paused(self, session_id: int) -> Session:
        """The session, brought back to the device if it was swapped out (worker thread)."""
        s = self.sched.get(session_id)
        self.sched.bring_back(s)
        return s

    # ------------------------------------------------------------ info and sessions
    @rpc
    def GetInfo(self, request, context):
        return self.state.info()

    @rpc
    def CreateSession(self, r, context):
        args, tok = self.engine.args, self.engine.tokenizer
        if r.prompt_tokens:
            tokens = list(r.prompt_tokens)
            bad = [t for t in tokens if not 0 <= t < args.vocab_size]
            if bad:
                raise invalid(f"prompt token {bad[0]} is outside the vocabulary 0..{args.vocab_size - 1}")
        elif r.prompt:
            tokens = tok.encode(r.prompt)
        else:
            raise invalid("a session needs a prompt (text) or prompt_tokens")
        max_new = r.max_new_tokens or 8
        if max_new < 1 or max_new > 100_000:
            raise invalid(f"max_new_tokens must be in 1..100000, got {max_new}")
        need = len(tokens) + max_new - 1      # the last token is sampled, never fed back
        context_len = r.context or need
        if context_len > self.engine.max_context:
            raise invalid(f"context {context_len} exceeds the server's --max-context {self.engine.max_context}")
        if need > context_len:
            raise invalid(f"prompt of {len(tokens)} tokens plus {max_new} new tokens needs a context of {need}, "
                          f"but the session asked for {context_len}")
        bps = convert.breakpoints_from_pb(r.breakpoints)
        for b in bps:
            why = validate_breakpoint(b, args.n_layers)
            if why:
                raise invalid(f"breakpoint {b.id}: {why}")
        mem = SessionMemory(kv_shape=(args.n_layers, 2, args.n_kv_heads, context_len, args.head_dim),
                            dtype=self.engine.dtype, act_capacity=self.state.act_bytes(context_len))
        s = Session(prompt_tokens=tokens, max_new_tokens=max_new, context=context_len, memory=mem,
                    prompt=r.prompt, label=r.label, stop_on_entry=r.stop_on_entry, breakpoints=bps,
                    traps=convert.traps_from_pb(r.traps))
        self.sched.add(s)
        return convert.session_info(s)

    @rpc
    def ListSessions(self, request, context):
        with self.sched.lock:
            sessions = list(self.sched.sessions.values())
        return pb.ListSessionsResponse(sessions=[convert.session_info(s) for s in sessions])

    @rpc
    def GetSession(self, r, context):
        return convert.session_info(self.sched.get(r.session_id))

    @rpc
    def CloseSession(self, r, context):
        s = self.sched.get(r.session_id)
        self.sched.call(lambda: self.sched.close(s))
        return convert.session_info(s)

    @rpc
    def SetBreakpoints(self, r, context):
        s = self.sched.get(r.session_id)
        bps = convert.breakpoints_from_pb(r.breakpoints)
        statuses, valid = [], []
        for b in bps:
            why = validate_breakpoint(b, self.engine.args.n_layers)
            statuses.append(pb.BreakpointStatus(id=b.id, verified=not why, message=why, layer=b.layer,
                                                point=convert.POINT_TO_PB[b.point]))
            if not why:
                valid.append(b)

        def apply():
            old = {(b.id, b.layer, b.point, b.condition, b.hit_condition): b.hits for b in s.breakpoints}
            for b in valid:   # an unchanged breakpoint keeps its hit count
                b.hits = old.get((b.id, b.layer, b.point, b.condition, b.hit_condition), 0)
            s.breakpoints = valid
            s.traps = convert.traps_from_pb(r.traps)
        self.sched.call(apply)
        return pb.SetBreakpointsResponse(breakpoints=statuses)

    # ------------------------------------------------------------ execution control
    @rpc
    def Continue(self, r, context):
        s = self.sched.get(r.session_id)
        self.sched.call(lambda: self.sched.resume(s))
        return convert.session_info(s)

    @rpc
    def Step(self, r, context):
        s = self.sched.get(r.session_id)
        kind = convert.STEP_FROM_PB.get(r.kind)
        if kind is None:
            raise invalid(f"unknown step kind {r.kind}")
        self.sched.call(lambda: self.sched.resume(s, kind))
        return convert.session_info(s)

    @rpc
    def Pause(self, r, context):
        s = self.sched.get(r.session_id)
        self.sched.call(lambda: self.sched.pause(s))
        return convert.session_info(s)

    # ------------------------------------------------------------ tensors
    @rpc
    def ListTensors(self, r, context):
        def work():
            s = self._paused(r.session_id)
            return tensor_ops.list_tensors(self.engine, s)
        return pb.TensorList(tensors=[convert.tensor_summary(d) for d in self.sched.call(work)])

    @stream_rpc
    def GetTensor(self, r, context):
        if r.chunk_bytes < 0 or r.chunk_bytes > MAX_CHUNK:
            raise invalid(f"chunk_bytes must be in 1..{MAX_CHUNK} (0 = {MAX_CHUNK}), got {r.chunk_bytes}")

        def work():
            s = self._paused(r.session_id)
            return tensor_ops.get_tensor(self.engine, s, r.name, convert.dims(r.slice), r.summary_only)
        summ, shape, dtype, data = self.sched.call(work)
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
    def SetTensor(self, r, context):
        mode = "add" if r.mode == pb.WRITE_MODE_ADD else "replace"

        def work():
            s = self._paused(r.session_id)
            return tensor_ops.set_tensor(self.engine, s, r.name, convert.dims(r.slice), mode, r.dtype, list(r.shape),
                                         r.data, r.scalar if r.has_scalar else None)
        return convert.tensor_summary(self.sched.call(work))

    @rpc
    def Evaluate(self, r, context):
        if len(r.expression) > 2000:
            raise invalid(f"expression of {len(r.expression)} characters; the limit is 2000")

        def work():
            s = self._paused(r.session_id)
            return tensor_ops.evaluate_expression(self.engine, s, r.expression)
        d = self.sched.call(work)
        resp = pb.EvaluateResponse(value=d.get("value", ""), is_tensor=d.get("is_tensor", False),
                                   result_name=d.get("result_name", ""), scalar=d.get("scalar", 0.0),
                                   is_bool=d.get("is_bool", False), compute_ms=d["compute_ms"])
        if "summary" in d:
            resp.summary.CopyFrom(convert.tensor_summary(d["summary"]))
        return resp

    @rpc
    def LogitLens(self, r, context):
        def work():
            s = self._paused(r.session_id)
            return tensor_ops.logit_lens(self.engine, s, r.top_k, r.tensor, r.position if r.HasField("position") else -1)
        return pb.LogitLensResponse(top=[pb.TokenProb(**d) for d in self.sched.call(work)])

    # ------------------------------------------------------------ streams
    @stream_rpc
    def Events(self, r, context):
        q = self.state.hub.subscribe(r.since_seq)
        try:
            while context.is_active() and not self.state.stopping:
                try:
                    ev = q.get(timeout=0.25)
                except queue.Empty:
                    continue
                if r.session_id and ev.session_id != r.session_id:
                    continue
                yield convert.event(ev)
        finally:
            self.state.hub.unsubscribe(q)

    @stream_rpc
    def Telemetry(self, r, context):
        interval = max(r.interval_ms or 100.0, 10.0) / 1e3
        next_t = time.monotonic()
        while context.is_active() and not self.state.stopping:
            yield self.state.telemetry_sample()
            next_t += interval
            time.sleep(max(0.0, next_t - time.monotonic()))
