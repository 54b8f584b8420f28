"""Faults contained: fair turns, device failures, slow subscribers, TLS, request size, exposure."""
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from djinn.server.server_main import check_exposure, parse_args
from djinn.server.streams import Subscriber
from djinn.server.auth import Identity
from djinn.runtime.events import EventHub, ServerEvent
from djinn.v1 import djinn_pb2 as pb
from djinn.v1 import djinn_pb2_grpc as pb_grpc
from harness import Client, InProcessServer, running_server

SERVER_DIR = os.path.join(os.path.dirname(__file__), "..")


def test_a_long_generation_does_not_keep_the_worker_from_a_continued_session():
    """B's next stop comes after at most a couple of A's passes, by event order, not timings."""
    with running_server() as (c, st):
        b = c.create([5, 6, 7, 8], max_new=3, layers=(10,))
        c.wait(pb.EVENT_KIND_STOPPED, b.id)
        a = c.create([9, 10, 11], max_new=300)               # no breakpoints: runs 300 passes
        c.wait(pb.EVENT_KIND_TOKEN, a.id)
        c.Continue(pb.SessionRef(session_id=b.id))
        resumed = c.wait(pb.EVENT_KIND_RESUMED, b.id)
        stopped = c.wait(pb.EVENT_KIND_STOPPED, b.id)
        assert stopped.session.position.token_index == 1    # the next pass's layer 10
        tokens_between = [e for e in c.backlog if e.kind == pb.EVENT_KIND_TOKEN and e.session_id == a.id
                          and resumed.seq < e.seq < stopped.seq]
        # B needs the rest of its pass plus 10 layers of the next: A gets at most a pass per B turn
        assert len(tokens_between) <= 3, len(tokens_between)
        gen = c.GetSession(pb.SessionRef(session_id=a.id))
        assert gen.state == pb.SESSION_STATE_RUNNING and len(gen.generated_tokens) < 300
        c.CloseSession(pb.SessionRef(session_id=a.id))


def test_the_quantum_splits_a_long_prefill():
    with running_server(quantum_ms=0.001) as (c, st):
        long = c.create(list(range(3, 500)), max_new=1, context=500, stop_on_entry=True)
        short = c.create([5, 6], max_new=1, layers=(5,), stop_on_entry=True)
        for s in (long, short):
            c.wait(pb.EVENT_KIND_STOPPED, s.id)
        c.Continue(pb.SessionRef(session_id=long.id))
        c.Continue(pb.SessionRef(session_id=short.id))
        first = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED), None)
        # the short one reached its layer-5 stop while the long prefill (40 layers) was cut into turns
        assert (first.session_id, first.kind) == (short.id, pb.EVENT_KIND_STOPPED)


def test_an_injected_device_fault_fails_every_session_once_and_refuses_gpu_work():
    with running_server(fault_injection=True) as (c, st):
        paused = c.create([5, 6, 7], max_new=3, layers=(10,))
        c.wait(pb.EVENT_KIND_STOPPED, paused.id)
        running = c.create([5, 6, 7], max_new=990, context=1000)
        c.wait(pb.EVENT_KIND_TOKEN, running.id)
        with pytest.raises(grpc.RpcError) as e:
            c.Evaluate(pb.EvaluateRequest(session_id=paused.id, expression="__device_fault__"))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "device" in e.value.details()
        failed = c.wait(pb.EVENT_KIND_DEVICE_FAILED, 0)
        assert "2 session(s) failed" in failed.text
        errors = {c.wait(pb.EVENT_KIND_ERROR, sid).session_id for sid in (paused.id, running.id)}
        assert errors == {paused.id, running.id}
        for sid in (paused.id, running.id):
            s = c.GetSession(pb.SessionRef(session_id=sid))
            assert s.state == pb.SESSION_STATE_FAILED and s.error.startswith("device failed")
        for call, req in ((c.Continue, pb.SessionRef(session_id=paused.id)),
                          (c.CreateSession, pb.CreateSessionRequest(prompt_tokens=[5], max_new_tokens=1)),
                          (c.Evaluate, pb.EvaluateRequest(session_id=paused.id, expression="1"))):
            with pytest.raises(grpc.RpcError) as e:
                call(req)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, call
        assert c.GetInfo(pb.GetInfoRequest()).device_error
        time.sleep(0.3)
        assert sum(1 for e in c.backlog if e.kind == pb.EVENT_KIND_DEVICE_FAILED) == 0   # said once


def test_the_server_process_exits_non_zero_after_a_device_fault():
    env = {**os.environ, "PYTHONPATH": SERVER_DIR}
    p = subprocess.Popen([sys.executable, "-m", "djinn.server.server_main", "--device", "cpu", "--model", "tiny-4l",
                          "--port", "0", "--test-fault-injection"], cwd=SERVER_DIR, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("DJINN_READY"):
            line = p.stdout.readline()
            assert line, p.stderr.read()
        import json
        address = json.loads(line.split(" ", 1)[1])["address"]
        stub = pb_grpc.DjinnStub(grpc.insecure_channel(address))
        s = stub.CreateSession(pb.CreateSessionRequest(prompt_tokens=[5, 6], max_new_tokens=2, stop_on_entry=True))
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError):
            stub.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="__device_fault__"))
        assert p.wait(20) == 3
        assert "the device failed" in p.stderr.read()
    finally:
        p.kill()


def test_a_slow_subscriber_is_told_it_lagged_and_nobody_waits_for_it():
    hub = EventHub()
    sub = Subscriber.__new__(Subscriber)
    sub.who, sub.session_id, sub.limit, sub.last_queued, sub.lagged_at = Identity("", True), 0, 5, 0, None
    from collections import deque
    sub.queue, sub.wake = deque(), threading.Event()
    evs = []
    for i in range(8):
        ev = ServerEvent(kind="token", session_id=1)
        hub.publish(ev)
        evs.append(ev)
    sub.offer(evs)
    assert len(sub.queue) == 5 and sub.lagged_at == 5


def test_a_subscriber_that_stops_reading_lags_alone_and_resumes_from_since_seq():
    with running_server(subscriber_queue=5, max_context=2400) as (c, st):
        # a small receive window (no BDP growth), so a reader that stops really stops the sending
        tight = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
        slow = pb_grpc.DjinnStub(grpc.insecure_channel(st.address, options=tight)).Events(pb.EventsRequest(), timeout=60)
        prompt = [3 + i % 500 for i in range(2000)]        # each event's snapshot carries ~4 KB of tokens
        s = c.create(prompt, max_new=300, context=2300)
        first = next(slow)          # its CREATED; now it stops reading while the session generates
        ev = c.wait(pb.EVENT_KIND_FINISHED, s.id, timeout=120)   # nobody else is held up
        assert len(ev.session.generated_tokens) == 300
        rest = []
        try:
            for e in slow:          # its backlog, then LAGGED, then the end of the stream
                rest.append(e)
        except grpc.RpcError as e:
            pytest.fail(f"the slow subscriber's stream did not end with LAGGED: {e.code()} after {len(rest)} events")
        lagged = [e for e in rest if e.kind == pb.EVENT_KIND_LAGGED]
        assert len(lagged) == 1 and rest[-1].kind == pb.EVENT_KIND_LAGGED
        got = [e.seq for e in [first] + rest[:-1]]
        assert got == list(range(got[0], got[0] + len(got))) and lagged[0].seq == got[-1]   # nothing skipped before it
        again = Client(c.stub, since_seq=lagged[0].seq)
        assert again.wait(None).seq == lagged[0].seq + 1           # resumes exactly after the mark


def test_replay_is_bounded_and_an_old_since_seq_is_told_it_lagged():
    with running_server(replay_mb=0.002) as (c, st):
        s = c.create([5, 6, 7], max_new=20)
        c.wait(pb.EVENT_KIND_FINISHED, s.id)
        assert st.hub.retained_bytes <= 4000
        late = Client(c.stub, since_seq=1)
        ev = late.wait(None)
        assert ev.kind == pb.EVENT_KIND_LAGGED and ev.seq == 1
        # a recent since_seq replays exactly what came after it
        last = st.hub.last_seq
        again = Client(c.stub, since_seq=last - 2)
        assert [again.wait(None).seq for _ in range(2)] == [last - 1, last]


def test_many_open_streams_do_not_hold_up_unary_calls():
    with running_server() as (c, st):
        chans = [grpc.insecure_channel(st.address) for _ in range(60)]
        streams = []
        for ch in chans:
            stub = pb_grpc.DjinnStub(ch)
            streams += [stub.Events(pb.EventsRequest()), stub.Telemetry(pb.TelemetryRequest(interval_ms=100))]
        time.sleep(1.0)
        t0 = time.perf_counter()
        for _ in range(20):
            c.GetInfo(pb.GetInfoRequest(), timeout=5)
        assert (time.perf_counter() - t0) / 20 < 0.5
        assert next(iter(c.Telemetry(pb.TelemetryRequest()))).open_streams >= 120
        for s in streams:
            s.cancel()
        for ch in chans:
            ch.close()


def test_tls_serves_clients_that_trust_its_ca_only():
    trustme = pytest.importorskip("trustme")
    from djinn.server.state import Options, ServerState
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    creds = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())])
    st = ServerState(Options(model="tiny-4l", device="cpu", budget="8", token="secret-token", tls=True))
    srv = InProcessServer(st, credentials=creds)
    try:
        good = grpc.secure_channel(srv.address, grpc.ssl_channel_credentials(ca.cert_pem.bytes()))
        info = pb_grpc.DjinnStub(good).GetInfo(pb.GetInfoRequest(), metadata=[("x-djinn-token", "secret-token")],
                                               timeout=10)
        assert info.tls and info.user == "default"
        plain = pb_grpc.DjinnStub(grpc.insecure_channel(srv.address))
        with pytest.raises(grpc.RpcError) as e:
            plain.GetInfo(pb.GetInfoRequest(), timeout=3)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        srv.stop()
        st.shutdown()


def test_a_request_over_the_cap_is_refused_before_it_is_read():
    with running_server() as (c, st):
        s = c.create([5, 6, 7], max_new=2, stop_on_entry=True)
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        big = pb.SetTensorRequest(session_id=s.id, name="hidden", dtype="float32", shape=[3, 128],
                                  data=b"\0" * (65 << 20))
        with pytest.raises(grpc.RpcError) as e:
            c.SetTensor(big)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.GetSession(pb.SessionRef(session_id=s.id)).state == pb.SESSION_STATE_PAUSED


def test_listening_beyond_loopback_needs_tokens():
    assert "tokens-file" in check_exposure(parse_args(["--host", "0.0.0.0", "--token", ""]))
    assert check_exposure(parse_args(["--host", "0.0.0.0", "--tokens-file", "x"])) == ""
    assert check_exposure(parse_args(["--host", "127.0.0.1", "--token", ""])) == ""
    assert check_exposure(parse_args(["--host", "::1", "--token", ""])) == ""
    assert "go together" in check_exposure(parse_args(["--token", "t", "--tls-cert", "c"]))
