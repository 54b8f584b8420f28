"""Issue-10 benchmark, the parts measured through a real server process
(`python -m djinn.server.server_main`, started as server/tests/loadgen.py does, gRPC client on
the generated stubs of server/djinn/v1/). Used by bench/h200_perf.py; no torch in this process.

  ready          wall time from spawning the server to its DJINN_READY line (--host-pool-gb as given);
  serial         N sessions without breakpoints, one after another: generated tokens / wall time;
  batched        the same N sessions created at once: generated tokens / wall time to the last finish;
  decode_server  one session of context C at position C - 32 through the server: gaps between its
                 TOKEN events (the server's own timestamps);
  resume         a session stopped at layer L and swapped out (server started with --swap-policy
                 eager), then Continue: client-seen time until it has been brought back and stopped
                 again one layer later (both the SWAP_IN event and the STOPPED event arrived);
                 with a Prefetch RPC in the proto, every other sample is taken after Prefetch and
                 its SWAP_IN event instead (prefetched: Continue to the STOPPED event);
  density        (own server, --vram-budget-gb 80, pressure policy) 2048-token sessions with
                 breakpoints created until refused, all continued to the end, outputs against
                 uninterrupted runs of the same prompts on the same server.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from perf_common import log, prompt_tokens, summary, use_server_package

use_server_package()
import grpc  # noqa: E402

import loadgen  # noqa: E402
from djinn.v1 import djinn_pb2 as pb  # noqa: E402
from djinn.v1 import djinn_pb2_grpc as pb_grpc  # noqa: E402

TAG = "server"
K = pb.EventKind


class SessionFailed(RuntimeError):
    pass


class Feed:
    """One Events stream of everything, read on its own thread; every event kept per session
    with its arrival time (perf_counter at the moment the client thread received it)."""

    def __init__(self, stub, since_seq: int):
        self.cv = threading.Condition()
        self.by_session: dict[int, list] = defaultdict(list)
        self.ended = ""
        self.call = stub.Events(pb.EventsRequest(since_seq=since_seq))
        self.thread = threading.Thread(target=self._pump, daemon=True, name="perf-events")
        self.thread.start()

    def _pump(self) -> None:
        try:
            for ev in self.call:
                t = time.perf_counter()
                with self.cv:
                    self.by_session[ev.session_id].append((t, ev))
                    self.cv.notify_all()
            why = "the Events stream ended"
        except grpc.RpcError as e:
            why = f"the Events stream failed: {e.code().name} {e.details()}"
        with self.cv:
            self.ended = why
            self.cv.notify_all()

    def count(self, sid: int) -> int:
        with self.cv:
            return len(self.by_session[sid])

    def wait(self, sid: int, pred, start: int = 0, timeout: float = 600.0):
        """The first event of sid at index >= start with pred(ev): (index, arrival time, event).
        An ERROR / CLOSED event of sid, or the stream ending, raises."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                evs = self.by_session[sid]
                while i < len(evs):
                    t, ev = evs[i]
                    if pred(ev):
                        return i, t, ev
                    if ev.kind in (K.EVENT_KIND_ERROR, K.EVENT_KIND_CLOSED, K.EVENT_KIND_DEVICE_FAILED):
                        raise SessionFailed(f"session {sid}: {K.Name(ev.kind)} {ev.text}")
                    i += 1
                if self.ended:
                    raise SessionFailed(self.ended)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"session {sid}: no matching event in {timeout} s "
                                       f"(last: {[K.Name(e.kind) for _, e in evs[-5:]]})")
                self.cv.wait(min(left, 1.0))

    def events(self, sid: int) -> list:
        with self.cv:
            return list(self.by_session[sid])

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def kind(*kinds):
    return lambda ev: ev.kind in kinds


def stopped_at(layer: int):
    return lambda ev: ev.kind == K.EVENT_KIND_STOPPED and ev.session.position.layer == layer


class Client:
    def __init__(self, address: str):
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = pb_grpc.DjinnStub(self.channel)
        self.info = self.stub.GetInfo(pb.GetInfoRequest(), timeout=60)
        self.feed = Feed(self.stub, self.info.event_seq)

    def create(self, prompt, max_new, context, layers=(), timeout=120.0) -> int:
        req = pb.CreateSessionRequest(prompt_tokens=prompt, max_new_tokens=max_new, context=context,
                                      breakpoints=[pb.Breakpoint(id=i + 1, layer=l) for i, l in enumerate(layers)])
        return self.stub.CreateSession(req, timeout=timeout).id

    def finished(self, sid: int, timeout: float = 600.0) -> list[int]:
        _, _, ev = self.feed.wait(sid, kind(K.EVENT_KIND_FINISHED), timeout=timeout)
        return list(ev.session.generated_tokens)

    def close(self) -> None:
        self.feed.close()
        self.channel.close()


def start_server(o, *extra: str, name: str = "server"):
    """(ServerProcess, seconds from spawn to DJINN_READY)."""
    args = ["--host-pool-gb", str(o.host_pool_gb), "--max-context", str(o.context), *extra]
    if getattr(o, "batch_rows", None):
        args += ["--batch-rows", str(o.batch_rows), "--cuda-graphs", o.cuda_graphs]
    if o.dtype != "auto":
        args += ["--dtype", o.dtype]
    log(TAG, f"starting {name}: {o.model} on {o.device}, {' '.join(args)} ...")
    t = time.perf_counter()
    srv = loadgen.ServerProcess(*args, model=o.model, device=o.device, ready_timeout=o.ready_timeout_s,
                                env={"PYTORCH_CUDA_ALLOC_CONF": o.alloc_conf} if o.alloc_conf else None)
    ready_s = time.perf_counter() - t
    srv.t_spawn = t
    log(TAG, f"{name} ready in {ready_s:.1f} s at {srv.address} (its own startup_seconds "
             f"{srv.ready.get('startup_seconds', 0):.1f})")
    return srv, ready_s


def wait_pool_pinned(c: "Client", srv, timeout: float) -> dict | None:
    """With a server that pins its host pool in the background (MemoryInfo.host_pool_pinned_bytes
    in the proto): waits until the whole pool is pinned, so that the parts after it are measured
    without the pinning threads competing; returns the seconds from spawn to fully pinned as this
    client saw it (polling GetInfo every 0.1 s). None when the proto has no such field."""
    if "host_pool_pinned_bytes" not in pb.MemoryInfo.DESCRIPTOR.fields_by_name:
        return None
    end = time.monotonic() + timeout
    while True:
        m = c.stub.GetInfo(pb.GetInfoRequest(), timeout=60).memory
        done = m.host_pool_pinned_bytes >= m.host_pool_bytes or getattr(m, "host_pool_pin_seconds", 0) > 0
        if done or time.monotonic() > end:
            return dict(pinned_s=round(time.perf_counter() - srv.t_spawn, 2), complete=bool(done),
                        pinned_bytes=m.host_pool_pinned_bytes, pool_bytes=m.host_pool_bytes,
                        server_pin_seconds=getattr(m, "host_pool_pin_seconds", None))
        time.sleep(0.1)


# ---------------------------------------------------------------------------- the parts

def throughput(c: Client, o, batched: bool) -> dict:
    vocab = c.info.model.vocab_size
    prompts = [prompt_tokens(o.prompt_tokens, vocab, salt=1000 + i) for i in range(o.sessions)]
    ctx = o.prompt_tokens + o.gen_tokens
    outs: dict[int, list[int]] = {}
    t0 = time.perf_counter()
    if batched:
        ids = [c.create(p, o.gen_tokens, ctx) for p in prompts]
        created_s = time.perf_counter() - t0
        for i, sid in enumerate(ids):
            outs[i] = c.finished(sid)
    else:
        created_s = None
        for i, p in enumerate(prompts):
            outs[i] = c.finished(c.create(p, o.gen_tokens, ctx))
    wall = time.perf_counter() - t0
    tokens = sum(len(v) for v in outs.values())
    return dict(sessions=o.sessions, prompt_tokens=o.prompt_tokens, new_tokens=o.gen_tokens, tokens=tokens,
                wall_s=round(wall, 3), tokens_per_s=round(tokens / wall, 2),
                create_all_s=round(created_s, 3) if created_s is not None else None, outputs=outs,
                method=("all N CreateSession calls back to back, then wait for every FINISHED event; tokens counted "
                        "from the FINISHED events (prefill of the short prompt included in the time)") if batched else
                       ("CreateSession, wait for its FINISHED event, then the next; tokens from the FINISHED events"))


def decode_server(c: Client, o) -> dict:
    vocab = c.info.model.vocab_size
    n = o.warmup_tokens + o.decode_tokens
    P = o.context - n                  # n decode passes after the prefill: positions P .. context - 1
    sid = c.create(prompt_tokens(P, vocab, salt=1), n + 1, o.context)
    c.finished(sid)
    toks = [ev.time for _, ev in c.feed.events(sid) if ev.kind == K.EVENT_KIND_TOKEN]
    gaps = [(b - a) * 1e3 for a, b in zip(toks, toks[1:])][o.warmup_tokens:]
    return dict(ms=summary(gaps), first_position=P + o.warmup_tokens, context=o.context, method=(
        "one session without breakpoints on the server; gaps between consecutive TOKEN events' server timestamps "
        "(Event.time), after the prefill and the warm-up tokens: the worker's whole per-token cost, events included"))


def prefetch_method():
    """The Prefetch RPC of the proto, if there is one: (method descriptor or None)."""
    svc = pb.DESCRIPTOR.services_by_name.get("Djinn")
    return svc.methods_by_name.get("Prefetch") if svc is not None else None


def resume(c: Client, o) -> dict:
    """Needs a server started with --swap-policy eager: every stop starts a swap-out."""
    vocab, L = c.info.model.vocab_size, c.info.model.n_layers
    l1 = 10 if L > 11 else max(0, L // 2 - 1)
    reps = o.resume_reps
    pf = prefetch_method()
    n_new = 2 * reps + 3
    P = o.context - n_new
    sid = c.create(prompt_tokens(P, vocab, salt=2), n_new, o.context, layers=(l1, l1 + 1))
    f = c.feed
    cold, cold_stop_only, swap_in_ms, not_on_host, pre, pf_error = [], [], [], 0, [], ""
    pf_name = pf.full_name if pf is not None else None
    idx = 0
    for r in range(2 * reps + 1):      # pass 0 (prefill): warm-up; then cold and (if Prefetch exists) prefetched
        idx, _, ev = f.wait(sid, stopped_at(l1), idx)
        idx, _, _ = f.wait(sid, kind(K.EVENT_KIND_SWAP_OUT), idx + 1, timeout=120)   # the eager swap-out landed
        use_pf = pf is not None and r % 2 == 0 and r > 0
        if use_pf:
            try:
                req = getattr(pb, pf.input_type.name)(session_id=sid)
                getattr(c.stub, "Prefetch")(req, timeout=60)
                idx, _, _ = f.wait(sid, kind(K.EVENT_KIND_SWAP_IN), idx + 1, timeout=30)
            except Exception as e:  # noqa: BLE001 - an RPC we do not know yet: say why, measure the cold ones
                why = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else f"{type(e).__name__}: {e}"
                pf_error, pf, use_pf = why, None, False
        if use_pf:
            pass
        elif c.stub.GetSession(pb.SessionRef(session_id=sid), timeout=30).kv_location != pb.KV_LOCATION_HOST:
            not_on_host += 1
        mark = f.count(sid)
        t0 = time.perf_counter()
        c.stub.Continue(pb.SessionRef(session_id=sid), timeout=60)
        j, t_stop, _ = f.wait(sid, stopped_at(l1 + 1), mark)
        t_in, ms_in = t_stop, None
        if not use_pf:
            try:    # the swap-in's event: before the stop (CPU) or a little after it (CUDA: when the copy is polled)
                _, t_in, ev_in = f.wait(sid, kind(K.EVENT_KIND_SWAP_IN), mark, timeout=60)
                ms_in = ev_in.ms
            except TimeoutError:
                t_in = None
        if r == 0:
            pass                       # pass 0 (prefill): a warm-up
        elif use_pf:
            pre.append((t_stop - t0) * 1e3)
        elif t_in is not None:
            cold.append((max(t_stop, t_in) - t0) * 1e3)
            cold_stop_only.append((t_stop - t0) * 1e3)
            swap_in_ms.append(ms_in)
        idx = j + 1
        c.stub.Continue(pb.SessionRef(session_id=sid), timeout=60)     # on to layer l1 of the next pass
        if pf is None and len(cold) >= reps:
            break
    kv_bytes = c.stub.GetSession(pb.SessionRef(session_id=sid), timeout=30).kv_bytes
    try:
        c.stub.CloseSession(pb.SessionRef(session_id=sid), timeout=60)
    except grpc.RpcError as e:
        log(TAG, f"resume: CloseSession {sid}: {e.code().name} {e.details()}")
    out = dict(layer=l1, position=P, context=o.context, kv_bytes=kv_bytes, cold_ms=summary(cold),
               cold_continue_to_stopped_event_ms=summary(cold_stop_only), server_swap_in_ms=summary(swap_in_ms),
               cold_samples_not_on_host=not_on_host, prefetch_rpc=pf_name, prefetch_error=pf_error,
               prefetched_ms=summary(pre) if pf_name else None,
               method=("client-seen: from sending Continue to a session paused at layers.%d of a decode pass whose KV "
                       "is on the host (server --swap-policy eager: swapped out at the stop; the SWAP_OUT event waited "
                       "for) until both its SWAP_IN event (the server publishes it when the copy is done) and its "
                       "STOPPED event at layers.%d (one layer later) have arrived; server_swap_in_ms: the copy's own "
                       "CUDA-event time from the SWAP_IN event" % (l1, l1 + 1)))
    return out


def spill_figures(c: Client) -> dict:
    """The disk tier's figures from one telemetry sample (moves each way, measured GB/s)."""
    call = c.stub.Telemetry(pb.TelemetryRequest(), timeout=30)
    try:
        t = next(iter(call))
    finally:
        call.cancel()
    names = ("spill_bytes", "spill_used_bytes", "spills_out", "spills_in", "spill_write_gb_per_s", "spill_read_gb_per_s")
    return {n: getattr(t, n) for n in names if n in pb.TelemetrySample.DESCRIPTOR.fields_by_name}


def density(c: Client, o, log_every: int = 10) -> dict:
    vocab, L = c.info.model.vocab_size, c.info.model.n_layers
    layers = tuple(x for x in (10, 20, 30) if x < L) or (L // 2,)
    P = o.context - o.density_new_tokens
    prompts, ids, refused, t0 = [], [], "", time.perf_counter()
    stops = {"n": 0}
    stop_flag = threading.Event()

    def continuer():
        """Continue every session at every stop (as the Exp 3 driver does, without think time)."""
        seen: dict[int, int] = defaultdict(int)
        while not stop_flag.is_set():
            for sid in list(ids):
                evs = c.feed.events(sid)
                for _, ev in evs[seen[sid]:]:
                    if ev.kind == K.EVENT_KIND_STOPPED:
                        stops["n"] += 1
                        try:
                            c.stub.Continue(pb.SessionRef(session_id=sid), timeout=300)
                        except grpc.RpcError as e:
                            log(TAG, f"density: Continue {sid}: {e.code().name} {e.details()}")
                seen[sid] = len(evs)
            time.sleep(0.01)

    th = threading.Thread(target=continuer, daemon=True, name="perf-continue")
    created_at_refusal = None
    while len(ids) < o.density_max:
        p = prompt_tokens(P, vocab, salt=5000 + len(ids))
        try:
            sid = c.create(p, o.density_new_tokens, o.context, layers=layers, timeout=o.density_create_timeout_s)
        except grpc.RpcError as e:
            refused = f"{e.code().name}: {e.details()}"
            created_at_refusal = len(ids)
            break
        prompts.append(p)
        ids.append(sid)
        if len(ids) % log_every == 0:
            log(TAG, f"density: {len(ids)} sessions created")
    create_s = time.perf_counter() - t0
    log(TAG, f"density: {len(ids)} sessions created in {create_s:.1f} s; refused: {refused or 'never'}; continuing all")
    th.start()
    outs, failed = {}, {}
    for i, sid in enumerate(ids):
        try:
            outs[i] = c.finished(sid, timeout=o.density_finish_timeout_s)
        except (SessionFailed, TimeoutError) as e:
            failed[i] = str(e)
    stop_flag.set()
    th.join(10)
    run_s = time.perf_counter() - t0
    log(TAG, f"density: {len(outs)} finished, {len(failed)} failed/lost in {run_s:.1f} s; reference runs ...")
    # references: the same prompts, no breakpoints, one at a time on the same server (batch of one)
    refs, equal = {}, 0
    for i, p in enumerate(prompts):
        if i in outs:
            refs[i] = c.finished(c.create(p, o.density_new_tokens, o.context))
            equal += int(refs[i] == outs[i])
    return dict(count_equal=equal, created=len(ids), finished=len(outs), failed=failed, refused=refused,
                refused_after=created_at_refusal, stops=stops["n"], layers=list(layers), context=o.context,
                prompt_tokens=P, new_tokens=o.density_new_tokens, create_s=round(create_s, 2), run_s=round(run_s, 2),
                reference_s=round(time.perf_counter() - t0 - run_s, 2),
                mismatched=[i for i in outs if refs.get(i) != outs[i]],
                method=("CreateSession of %d-token sessions (breakpoints at %s) until the server refuses one (or "
                        "--density-max), every stop continued, every session waited for; counted: FINISHED with the "
                        "tokens of an uninterrupted run of the same prompt on the same server" % (o.context, layers)))
