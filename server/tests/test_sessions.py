"""End-to-end behaviour of the server over real gRPC, on the CPU with tiny-40l."""
import random
import threading
import time

import grpc
import pytest
import torch

from djinn.v1 import djinn_pb2 as pb
from harness import running_server

BPS = (10, 20, 30)


def prompt(seed, n=24, vocab=512):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def test_stops_at_every_breakpoint_of_every_pass_with_swaps_bit_identical():
    with running_server(swap_policy="eager") as (c, st):
        toks = prompt(1)
        ref_tokens, ref_logits = st.engine.reference(toks, 4, with_logits=True)
        s = c.create(toks, max_new=4, layers=BPS)
        stops = []
        while True:
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED), s.id)
            if ev.kind == pb.EVENT_KIND_FINISHED:
                break
            pos = ev.session.position
            stops.append((pos.token_index, pos.layer))
            # eager policy: the stop is followed by a swap-out; reading a tensor swaps it back in
            assert c.wait(pb.EVENT_KIND_SWAP_OUT, s.id).bytes > 0
            t = c.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden", summary_only=True))
            assert next(iter(t)).summary.shape[-1] == 128
            c.Continue(pb.SessionRef(session_id=s.id))
        # 4 new tokens = 4 forward passes (prefill + 3 decodes), each stopping at 10, 20, 30
        assert stops == [(k, l) for k in range(4) for l in BPS]
        assert list(ev.session.generated_tokens) == ref_tokens
        assert ev.session.swap_outs == 12 and ev.session.swap_ins >= 12
        live = st.scheduler.sessions[s.id]
        assert torch.equal(live.last_logits, ref_logits)   # bit-identical, not merely close


def test_many_sessions_under_a_budget_of_a_third_of_their_kv():
    n, ctx, new = 9, 32, 3
    with running_server(budget="auto:0.34", plan_sessions=n, plan_context=ctx) as (c, st):
        budget = st.ledger.budget
        prompts = [prompt(100 + i, ctx - new + 1) for i in range(n)]
        ids = [c.create(p, max_new=new, layers=BPS, context=ctx).id for p in prompts]
        finished = {}
        while len(finished) < n:
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR), None, 120)
            assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
            if ev.kind == pb.EVENT_KIND_FINISHED:
                finished[ev.session_id] = list(ev.session.generated_tokens)
            else:   # a user who thinks a little at each stop, so others start meanwhile
                threading.Timer(0.05, c.Continue, [pb.SessionRef(session_id=ev.session_id)]).start()
        for sid, p in zip(ids, prompts):
            assert finished[sid] == st.engine.reference(p, new)
        assert st.scheduler.totals["out"][0] > 0 and st.scheduler.totals["in"][0] > 0
        assert st.ledger.peak <= budget
        sample = c.Telemetry(pb.TelemetryRequest(interval_ms=50))
        first = next(sample)
        assert first.accounted_peak_bytes <= budget and first.swap_outs > 0
        sample.cancel()


def test_intervention_changes_only_its_own_session_and_is_repeatable():
    with running_server() as (c, st):
        toks = prompt(7)
        ref = st.engine.reference(toks, 4)
        outs = []
        for attempt in range(2):
            a = c.create(toks, max_new=4, layers=(20,))
            b = c.create(toks, max_new=4, layers=(20,))
            c.wait(pb.EVENT_KIND_STOPPED, a.id)
            c.SetTensor(pb.SetTensorRequest(session_id=a.id, name="hidden", mode=pb.WRITE_MODE_ADD,
                                            has_scalar=True, scalar=3.0))
            c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=a.id))
            c.Continue(pb.SessionRef(session_id=a.id))
            out_a = list(c.wait(pb.EVENT_KIND_FINISHED, a.id).session.generated_tokens)
            c.wait(pb.EVENT_KIND_STOPPED, b.id)
            c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=b.id))
            c.Continue(pb.SessionRef(session_id=b.id))
            out_b = list(c.wait(pb.EVENT_KIND_FINISHED, b.id).session.generated_tokens)
            assert out_b == ref
            outs.append(out_a)
        assert outs[0] != ref
        assert outs[0] == outs[1]


def test_a_paused_session_does_not_stop_the_others():
    with running_server() as (c, st):
        p = c.create(prompt(1), max_new=2, layers=(1,))
        c.wait(pb.EVENT_KIND_STOPPED, p.id)
        q = c.create(prompt(2), max_new=3)
        done = c.wait(pb.EVENT_KIND_FINISHED, q.id)
        assert len(done.session.generated_tokens) == 3
        assert c.GetSession(pb.SessionRef(session_id=p.id)).state == pb.SESSION_STATE_PAUSED


def test_pause_a_running_session_and_step_granularity():
    with running_server() as (c, st):
        s = c.create(prompt(3), max_new=30, stop_on_entry=True)
        ev = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.stop_reason == pb.STOP_REASON_ENTRY and ev.session.position.layer == 0
        c.Step(pb.StepRequest(session_id=s.id, kind=pb.STEP_KIND_SUBLAYER))
        p = c.wait(pb.EVENT_KIND_STOPPED, s.id).session.position
        assert (p.layer, p.point) == (0, pb.STOP_POINT_ATTN)
        c.Step(pb.StepRequest(session_id=s.id, kind=pb.STEP_KIND_SUBLAYER))
        p = c.wait(pb.EVENT_KIND_STOPPED, s.id).session.position
        assert (p.layer, p.point) == (0, pb.STOP_POINT_MLP)
        c.Step(pb.StepRequest(session_id=s.id, kind=pb.STEP_KIND_LAYER))
        p = c.wait(pb.EVENT_KIND_STOPPED, s.id).session.position
        assert (p.layer, p.point) == (1, pb.STOP_POINT_LAYER)
        c.Step(pb.StepRequest(session_id=s.id, kind=pb.STEP_KIND_TOKEN))
        p = c.wait(pb.EVENT_KIND_STOPPED, s.id).session.position
        assert (p.layer, p.token_index, p.phase) == (0, 1, pb.PHASE_DECODE)
        c.Continue(pb.SessionRef(session_id=s.id))
        c.Pause(pb.SessionRef(session_id=s.id))
        ev = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.stop_reason == pb.STOP_REASON_PAUSE


def test_conditions_hit_counts_and_nan_trap():
    with running_server() as (c, st):
        bp = pb.Breakpoint(id=1, layer=5, condition='phase == "decode"', hit_condition=">= 2")
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(4), max_new_tokens=5, breakpoints=[bp]))
        p = c.wait(pb.EVENT_KIND_STOPPED, s.id).session.position
        assert (p.layer, p.token_index) == (5, 2)   # decode passes are 1, 2, ...; the second hit
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, traps=pb.Traps(nan=True)))
        c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", slice=[pb.DimSlice(start=0, stop=1)],
                                        has_scalar=True, scalar=float("nan")))
        c.Continue(pb.SessionRef(session_id=s.id))
        ev = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.stop_reason == pb.STOP_REASON_NAN and "NaN" in ev.text


def test_bf16_slices_come_back_raw_in_chunks():
    with running_server(dtype="bfloat16") as (c, st):
        s = c.create(prompt(5, 40), max_new=2, layers=(3,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        chunks = list(c.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden", chunk_bytes=1000)))
        head = chunks[0]
        assert head.dtype == "bfloat16" and list(head.slice_shape) == [40, 128]
        data = b"".join(ch.data for ch in chunks)
        assert len(data) == 40 * 128 * 2 and all(len(ch.data) <= 1000 for ch in chunks)
        got = torch.frombuffer(bytearray(data), dtype=torch.bfloat16).view(40, 128)
        live = st.scheduler.sessions[s.id].memory.acts["hidden"]
        assert torch.equal(got, live)
        part = list(c.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden",
                                                    slice=[pb.DimSlice(start=-1, stop=0), pb.DimSlice(start=0, stop=8)])))
        assert list(part[0].slice_shape) == [1, 8]


def code(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving():
    # room for about one session on the device and one in the host pool
    with running_server(host_pool_gb=0.0008, budget="auto:1", plan_sessions=1, plan_context=32) as (c, st):
        s = c.create(prompt(6), max_new=2, layers=(2,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        ref = lambda: pb.SessionRef(session_id=s.id)
        cases = {
            "unknown session": (lambda: c.GetSession(pb.SessionRef(session_id=12345)), grpc.StatusCode.NOT_FOUND, "12345"),
            "layer 40 of 40": (lambda: c.create(prompt(1), layers=(40,)), grpc.StatusCode.INVALID_ARGUMENT, "layers 0..39"),
            "slice out of range": (lambda: list(c.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden",
                                   slice=[pb.DimSlice(start=0, stop=999)]))), grpc.StatusCode.OUT_OF_RANGE, "999"),
            "wrong shape": (lambda: c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", dtype="float32",
                            shape=[2, 2], data=b"\0" * 16)), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
            "wrong dtype": (lambda: c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", dtype="bfloat16",
                            shape=[24, 128], data=b"\0" * (24 * 128 * 2))), grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
            "read-only": (lambda: c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="q", has_scalar=True)),
                          grpc.StatusCode.FAILED_PRECONDITION, "read-only"),
            "unknown tensor": (lambda: list(c.GetTensor(pb.GetTensorRequest(session_id=s.id, name="nope"))),
                               grpc.StatusCode.NOT_FOUND, "available"),
            "prompt longer than context": (lambda: c.create(prompt(1, 50), max_new=2, context=20),
                                           grpc.StatusCode.INVALID_ARGUMENT, "context"),
            "import": (lambda: c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="__import__('os')")),
                       grpc.StatusCode.INVALID_ARGUMENT, "expression"),
            "attribute": (lambda: c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="hidden.__class__")),
                          grpc.StatusCode.INVALID_ARGUMENT, "expression"),
            "malformed": (lambda: c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="hidden[1,,")),
                          grpc.StatusCode.INVALID_ARGUMENT, "expression"),
            "no prompt": (lambda: c.CreateSession(pb.CreateSessionRequest()), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
            "continue a running one": (lambda: (c.Continue(ref()), c.Continue(ref())),
                                       grpc.StatusCode.FAILED_PRECONDITION, "not paused"),
        }
        for name, (fn, status, words) in cases.items():
            got, details = code(fn)
            assert got == status, f"{name}: {got} {details}"
            assert words in details, f"{name}: {details}"
        # Room for about two sessions in all (device and host pool): the next are refused, the first is unharmed.
        got, details = code(lambda: [c.create(prompt(9 + i), max_new=2) for i in range(3)])
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "host pool" in details
        assert c.GetInfo(pb.GetInfoRequest()).model.n_layers == 40
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id))
        if c.GetSession(ref()).state == pb.SESSION_STATE_PAUSED:
            c.Continue(ref())
        done = c.wait(pb.EVENT_KIND_FINISHED, s.id)
        assert len(done.session.generated_tokens) == 2


def test_telemetry_streams_at_ten_hertz_or_more():
    with running_server() as (c, st):
        stream = c.Telemetry(pb.TelemetryRequest(interval_ms=50))
        t = [next(stream).time for _ in range(11)]
        stream.cancel()
        assert (t[-1] - t[0]) / 10 < 0.1


def test_logit_lens_and_tensor_catalog_at_each_sub_point():
    with running_server() as (c, st):
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(8), max_new_tokens=2,
                                                    breakpoints=[pb.Breakpoint(id=1, layer=39, point=pb.STOP_POINT_MLP)]))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        names = [t.name for t in c.ListTensors(pb.SessionRef(session_id=s.id)).tensors]
        assert {"hidden", "attn_out", "mlp_out", "q", "k", "v", "k_cache", "v_cache", "logits"} <= set(names)
        top = c.LogitLens(pb.LogitLensRequest(session_id=s.id, top_k=3)).top
        assert len(top) == 3 and top[0].prob >= top[1].prob >= top[2].prob and sum(t.prob for t in top) <= 1
        best = c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="argmax(logits[-1])"))
        assert int(best.scalar) == top[0].token
        first = c.LogitLens(pb.LogitLensRequest(session_id=s.id, top_k=1, position=0)).top[0]
        assert int(c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="argmax(logits[0])")).scalar) == first.token
        got, details = code(lambda: c.LogitLens(pb.LogitLensRequest(session_id=s.id, position=99)))
        assert got == grpc.StatusCode.OUT_OF_RANGE and "99" in details


def test_reading_a_swapped_session_never_evicts_the_one_mid_pass():
    # A budget that holds about two sessions: reading a paused, swapped-out session's tensors
    # brings it back while others run; the worker must not evict the session it is running.
    with running_server(budget="auto:0.3", plan_sessions=4, plan_context=32) as (c, st):
        ids = [c.create(prompt(20 + i, 30), max_new=3, layers=(10,), context=32).id for i in range(4)]
        finished, deadline = set(), time.monotonic() + 120
        while len(finished) < 4 and time.monotonic() < deadline:
            for sid in ids:
                info = c.GetSession(pb.SessionRef(session_id=sid))
                assert info.state != pb.SESSION_STATE_FAILED, info.error
                if info.state == pb.SESSION_STATE_PAUSED:
                    list(c.GetTensor(pb.GetTensorRequest(session_id=sid, name="hidden", summary_only=True)))
                    c.Continue(pb.SessionRef(session_id=sid))
                elif info.state == pb.SESSION_STATE_FINISHED:
                    finished.add(sid)
        assert finished == set(ids)
        assert st.scheduler.totals["out"][0] > 0
