"""Many users on one server: tokens, owners, per-client breakpoints, Detach, leases (real gRPC, CPU)."""
import time

import grpc
import pytest

from djinn.server.auth import Users, load_tokens_file
from djinn.v1 import djinn_pb2 as pb
from harness import Client, running_server

TOKENS = "alice alice-token-1\nbob bob-token-22\nroot root-token-333 admin\n"


@pytest.fixture
def tokens_file(tmp_path):
    p = tmp_path / "tokens.txt"
    p.write_text("# users of the shared server\n" + TOKENS)
    return str(p)


def code(fn, *a):
    try:
        fn(*a)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_tokens_file_parsing_and_constant_time_check(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("alice 12345678\nroot abcdefgh admin\n")
    u = Users(load_tokens_file(str(p)))
    assert u.check("12345678") == ("alice", False) and u.check("abcdefgh") == ("root", True)
    assert u.check("1234567") is None and u.check("") is None and u.check(None) is None
    for bad, why in (("alice short\n", "shorter than 8"), ("alice 12345678 root\n", "NAME TOKEN"),
                     ("a 12345678\nb 12345678\n", "also another"), ("", "no users")):
        p.write_text(bad)
        with pytest.raises(ValueError, match=why):
            load_tokens_file(str(p))


def test_unknown_tokens_are_refused_and_counted(tokens_file):
    with running_server(tokens_file=tokens_file) as (anon, st):
        wrong = Client.connect(st.address, "not-a-token", "x")
        assert code(anon.GetInfo, pb.GetInfoRequest()) == grpc.StatusCode.UNAUTHENTICATED
        assert code(wrong.ListSessions, pb.ListSessionsRequest()) == grpc.StatusCode.UNAUTHENTICATED
        alice = Client.connect(st.address, "alice-token-1", "w1")
        info = alice.GetInfo(pb.GetInfoRequest())
        assert (info.user, info.admin, info.client_id) == ("alice", False, "w1") and len(info.server_id) == 32
        sample = next(iter(alice.Telemetry(pb.TelemetryRequest())))
        assert sample.auth_failures >= 3   # anon's Events stream, its GetInfo, wrong's stream + call


def test_other_users_sessions_do_not_exist_for_them(tokens_file):
    with running_server(tokens_file=tokens_file) as (_, st):
        alice = Client.connect(st.address, "alice-token-1", "w1")
        bob = Client.connect(st.address, "bob-token-22", "b1")
        root = Client.connect(st.address, "root-token-333", "r1")
        s = alice.create([5, 6, 7, 8], max_new=3, layers=(10,))
        assert s.owner == "alice"
        alice.wait(pb.EVENT_KIND_STOPPED, s.id)
        ref = pb.SessionRef(session_id=s.id)
        for call, req in ((bob.GetSession, ref), (bob.Continue, ref), (bob.Pause, ref), (bob.CloseSession, ref),
                          (bob.ListTensors, ref), (bob.Evaluate, pb.EvaluateRequest(session_id=s.id, expression="1")),
                          (bob.SetBreakpoints, pb.SetBreakpointsRequest(session_id=s.id)),
                          (bob.LogitLens, pb.LogitLensRequest(session_id=s.id)),
                          (bob.SetTensor, pb.SetTensorRequest(session_id=s.id, name="hidden", has_scalar=True))):
            assert code(call, req) == grpc.StatusCode.NOT_FOUND, call
        assert code(lambda: list(bob.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden")))) == \
            grpc.StatusCode.NOT_FOUND
        assert bob.ListSessions(pb.ListSessionsRequest()).sessions == []
        t = next(iter(bob.Telemetry(pb.TelemetryRequest())))
        assert list(t.sessions) == [] and t.resident_kv_bytes > 0      # device totals, not alice's sessions
        assert code(lambda: next(iter(bob.Events(pb.EventsRequest(session_id=s.id))))) == grpc.StatusCode.NOT_FOUND
        # bob's own stream never carries alice's events
        b = bob.create([9, 9, 9], max_new=1)
        bob.wait(pb.EVENT_KIND_FINISHED, b.id)
        assert all(e.session_id in (0, b.id) for e in bob.backlog)
        # the admin sees and may close everything
        assert {x.id for x in root.ListSessions(pb.ListSessionsRequest()).sessions} >= {s.id, b.id}
        root.CloseSession(ref)
        ev = alice.wait(pb.EVENT_KIND_CLOSED, s.id)
        assert "admin 'root'" in ev.text


def test_breakpoints_belong_to_the_client_that_set_them(tokens_file):
    with running_server(tokens_file=tokens_file) as (_, st):
        w1 = Client.connect(st.address, "alice-token-1", "window-1")
        w2 = Client.connect(st.address, "alice-token-1", "window-2")
        s = w1.create([5, 6, 7, 8], max_new=2, layers=(10,))          # window 1: id 10 at layer 10
        ev = w1.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert (ev.session.position.layer, list(ev.session.hit_breakpoint_ids)) == (10, [10])
        assert [x.id for x in w2.ListSessions(pb.ListSessionsRequest()).sessions] == [s.id]   # attach
        # window 2 uses the same id for another layer: window 1's breakpoint stays as it was
        w2.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, breakpoints=[pb.Breakpoint(id=10, layer=20)]))
        w1.Continue(pb.SessionRef(session_id=s.id))
        ev = w1.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.session.position.layer == 20 and list(ev.session.hit_breakpoint_ids) == []   # not window 1's
        ev2 = w2.wait(pb.EVENT_KIND_STOPPED, s.id, pred=lambda e: e.session.position.layer == 20)
        assert list(ev2.session.hit_breakpoint_ids) == [10]
        w1.Continue(pb.SessionRef(session_id=s.id))
        ev = w1.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert (ev.session.position.token_index, ev.session.position.layer) == (1, 10)   # window 1's again
        # window 2 detaches: its breakpoint goes, window 1's stays; nothing is closed
        d = w2.Detach(pb.DetachRequest(terminate=True))
        assert d.breakpoints_removed == 1 and list(d.closed_session_ids) == []
        w1.Continue(pb.SessionRef(session_id=s.id))
        ev = w1.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED), s.id)
        assert ev.kind == pb.EVENT_KIND_FINISHED      # layer 20 no longer stops it
        # detach with terminate closes only the sessions that client created
        mine = w1.create([3, 4], max_new=5, layers=(5,))
        theirs = w2.create([3, 4], max_new=5, layers=(5,))
        w1.wait(pb.EVENT_KIND_STOPPED, mine.id)
        w2.wait(pb.EVENT_KIND_STOPPED, theirs.id)
        d = w1.Detach(pb.DetachRequest(terminate=True))
        assert list(d.closed_session_ids) == [mine.id]
        assert w2.GetSession(pb.SessionRef(session_id=theirs.id)).state == pb.SESSION_STATE_PAUSED


def test_a_dropped_client_keeps_its_sessions_for_the_lease_then_they_are_freed(tokens_file):
    with running_server(tokens_file=tokens_file, lease_s=1.5, retire_s=0.5) as (_, st):
        pool0 = st.pool.used
        w = Client.connect(st.address, "alice-token-1", "laptop")
        kept = w.create([5, 6, 7], max_new=3, layers=(10,))
        w.wait(pb.EVENT_KIND_STOPPED, kept.id)
        w.drop()                                   # the laptop's connection goes
        time.sleep(0.8)
        back = Client.connect(st.address, "alice-token-1", "laptop-again")   # re-attach in time
        listed = back.ListSessions(pb.ListSessionsRequest()).sessions
        assert [(x.id, x.state, x.position.layer) for x in listed] == [(kept.id, pb.SESSION_STATE_PAUSED, 10)]
        time.sleep(2.0)                            # held by the new connection: not closed
        assert back.GetSession(pb.SessionRef(session_id=kept.id)).lease_expires_at == 0
        abandoned = back.create([5, 6, 7], max_new=3, layers=(10,))
        back.wait(pb.EVENT_KIND_STOPPED, abandoned.id)
        watcher = Client.connect(st.address, "root-token-333", "ops")
        back.drop()
        ev = watcher.wait(pb.EVENT_KIND_CLOSED, abandoned.id, timeout=10)
        assert "lease expired" in ev.text
        watcher.wait(pb.EVENT_KIND_CLOSED, kept.id, timeout=10)
        assert st.pool.used == pool0 and st.ledger.accounted() == st.ledger.fixed
        assert st.leases.closed == 2


def test_finished_sessions_are_retired_after_the_grace(tokens_file):
    with running_server(tokens_file=tokens_file, retire_s=0.5) as (_, st):
        w = Client.connect(st.address, "alice-token-1", "w")
        s = w.create([5, 6], max_new=1)
        w.wait(pb.EVENT_KIND_FINISHED, s.id)
        assert w.GetSession(pb.SessionRef(session_id=s.id)).state == pb.SESSION_STATE_FINISHED
        time.sleep(1.5)
        assert code(w.GetSession, pb.SessionRef(session_id=s.id)) == grpc.StatusCode.NOT_FOUND
        assert s.id not in st.scheduler.sessions
