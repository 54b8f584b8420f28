"""Prefetch (issue 10): the Prefetch RPC and the scheduler's prefetch of the next in line (real gRPC, CPU).

Budgets are given in sessions (auto:F with plan_sessions=10: room for 10*F sessions of
plan_context), so which session is swapped out follows from least-recently-paused eviction.
"""
import random
import threading
import time

import grpc
import pytest

from djinn.v1 import djinn_pb2 as pb
from harness import Client, running_server

CTX = 32
DEVICE, HOST = pb.KV_LOCATION_DEVICE, pb.KV_LOCATION_HOST


def prompt(seed, n=24, vocab=512):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def code(fn, *a):
    try:
        fn(*a)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def ref(sid):
    return pb.SessionRef(session_id=sid)


def info(c, sid):
    return c.GetSession(ref(sid))


def prefetch_in(e):
    return e.text.startswith("prefetch")


def three_paused(c, budget="auto:0.25", new=3):
    """A, B, C stop at layer 10 of their prefill under a budget for two: A (paused first) is
    evicted for C. Returns (ids, prompts)."""
    prompts = [prompt(60 + i) for i in range(3)]
    ids = []
    for p in prompts:      # one after another: the order of their stops is the order of creation
        s = c.create(p, max_new=new, layers=(10,), context=CTX)
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        ids.append(s.id)
    c.wait(pb.EVENT_KIND_SWAP_OUT, ids[0])
    return ids, prompts


def finish_all(c, ids):
    """Continues every session at each stop until all finished; their tokens by id."""
    done = {}
    for sid in ids:
        if info(c, sid).state == pb.SESSION_STATE_PAUSED:
            c.Continue(ref(sid))
    while len(done) < len(ids):
        ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR), None, 120)
        assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
        if ev.session_id not in ids:
            continue
        if ev.kind == pb.EVENT_KIND_FINISHED:
            done[ev.session_id] = list(ev.session.generated_tokens)
        else:
            c.Continue(ref(ev.session_id))
    return done


def test_prefetch_brings_a_swapped_session_back_and_its_continue_needs_no_swap_in():
    with running_server(budget="auto:0.25", plan_sessions=10, plan_context=CTX) as (c, st):
        ids, prompts = three_paused(c)
        a = ids[0]
        assert info(c, a).kv_location == HOST
        swap_ins = info(c, a).swap_ins
        got = c.Prefetch(pb.PrefetchRequest(session_id=a))
        assert got.id == a and got.state == pb.SESSION_STATE_PAUSED
        assert got.kv_location in (pb.KV_LOCATION_MOVING_IN, DEVICE)
        ev = c.wait(pb.EVENT_KIND_SWAP_IN, a)
        assert ev.text == "prefetch" and 0 < ev.bytes <= got.kv_bytes and ev.ms >= 0
        assert ev.session.kv_location == DEVICE and info(c, a).kv_location == DEVICE
        # the room came from the least recently paused of the others (B), never from nothing
        out = c.wait(pb.EVENT_KIND_SWAP_OUT, ids[1])
        assert out.seq < ev.seq and st.ledger.peak <= st.ledger.budget
        assert st.scheduler.prefetches["requested"] == 1
        # Continue right after: it runs with no further swap-in
        c.Continue(ref(a))
        stop = c.wait(pb.EVENT_KIND_STOPPED, a)
        assert stop.session.position.token_index == 1
        assert stop.session.swap_ins == swap_ins + 1          # the prefetch's only
        assert not [e for e in c.backlog if e.kind == pb.EVENT_KIND_SWAP_IN and e.session_id == a and e.seq > ev.seq]
        # and everything still gives exactly the reference tokens
        done = finish_all(c, ids)
        for sid, p in zip(ids, prompts):
            assert done[sid] == st.engine.reference(p, 3)


def test_prefetch_of_a_resident_session_does_nothing():
    with running_server(budget="auto:0.25", plan_sessions=10, plan_context=CTX) as (c, st):
        ids, _ = three_paused(c)
        before = (st.scheduler.totals["out"][0], st.scheduler.totals["in"][0])
        for sid in ids[1:]:
            got = c.Prefetch(pb.PrefetchRequest(session_id=sid))
            assert got.kv_location == DEVICE and got.state == pb.SESSION_STATE_PAUSED
        time.sleep(0.2)
        assert (st.scheduler.totals["out"][0], st.scheduler.totals["in"][0]) == before
        assert not [e for e in c.backlog if e.kind in (pb.EVENT_KIND_SWAP_IN, pb.EVENT_KIND_SWAP_OUT)
                    and e.session_id in ids[1:]]
        assert st.scheduler.prefetches["requested"] == 0


def test_prefetch_refusals_not_found_and_not_paused(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("alice alice-token-1\nbob bob-token-22\n")
    with running_server(tokens_file=str(tokens)) as (_, st):
        alice = Client.connect(st.address, "alice-token-1", "w1")
        bob = Client.connect(st.address, "bob-token-22", "b1")
        s = alice.create([5, 6, 7, 8], max_new=3, layers=(10,))
        alice.wait(pb.EVENT_KIND_STOPPED, s.id)
        # another user's session does not exist for them; nor does an unknown one
        got, details = code(bob.Prefetch, pb.PrefetchRequest(session_id=s.id))
        assert got == grpc.StatusCode.NOT_FOUND and f"no session {s.id}" in details
        assert code(alice.Prefetch, pb.PrefetchRequest(session_id=9999))[0] == grpc.StatusCode.NOT_FOUND
        assert code(alice.Prefetch, pb.PrefetchRequest(session_id=0))[0] == grpc.StatusCode.NOT_FOUND
        assert code(alice.Prefetch, pb.PrefetchRequest(session_id=s.id))[0] == grpc.StatusCode.OK
        # a running session is not paused; neither is a finished one
        r = alice.create([9, 10, 11], max_new=300)
        alice.wait(pb.EVENT_KIND_TOKEN, r.id)
        got, details = code(alice.Prefetch, pb.PrefetchRequest(session_id=r.id))
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "running, not paused" in details
        alice.CloseSession(ref(r.id))
        f = alice.create([3, 4], max_new=1)
        alice.wait(pb.EVENT_KIND_FINISHED, f.id)
        got, details = code(alice.Prefetch, pb.PrefetchRequest(session_id=f.id))
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "finished" in details


def test_a_prefetch_never_evicts_a_running_session_nor_one_just_prefetched():
    ctx = 1000
    with running_server(budget="auto:0.25", plan_sessions=10, plan_context=ctx) as (c, st):
        p1 = c.create(prompt(1), max_new=3, layers=(10,), context=ctx)
        c.wait(pb.EVENT_KIND_STOPPED, p1.id)
        p2 = c.create(prompt(2), max_new=3, layers=(10,), context=ctx)
        c.wait(pb.EVENT_KIND_STOPPED, p2.id)
        r = c.create([9, 10, 11], max_new=ctx - 2, context=ctx)     # a long generation: running throughout
        c.wait(pb.EVENT_KIND_SWAP_OUT, p1.id)                      # room for r: p1, least recently paused
        c.wait(pb.EVENT_KIND_TOKEN, r.id)
        # p1 back: the only paused resident session (p2) leaves, the running one stays
        assert c.Prefetch(pb.PrefetchRequest(session_id=p1.id)).kv_location in (pb.KV_LOCATION_MOVING_IN, DEVICE)
        assert c.wait(pb.EVENT_KIND_SWAP_IN, p1.id).text == "prefetch"
        c.wait(pb.EVENT_KIND_SWAP_OUT, p2.id)
        # p2: everything else is running (r) or just prefetched (p1): refused, nothing moves
        totals = (st.scheduler.totals["out"][0], st.scheduler.totals["in"][0])
        got, details = code(c.Prefetch, pb.PrefetchRequest(session_id=p2.id))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "no room to prefetch" in details and "nothing was evicted" in details
        assert (st.scheduler.totals["out"][0], st.scheduler.totals["in"][0]) == totals
        assert info(c, p1.id).kv_location == DEVICE and info(c, p2.id).kv_location == HOST
        ri = info(c, r.id)
        assert ri.state == pb.SESSION_STATE_RUNNING and ri.kv_location == DEVICE and ri.swap_outs == 0
        # once the hold is over, p1 is an ordinary resident paused session again
        st.scheduler.prefetch_hold = 0.0
        assert code(c.Prefetch, pb.PrefetchRequest(session_id=p2.id))[0] == grpc.StatusCode.OK
        assert c.wait(pb.EVENT_KIND_SWAP_IN, p2.id).text == "prefetch"
        c.wait(pb.EVENT_KIND_SWAP_OUT, p1.id)
        assert info(c, r.id).swap_outs == 0 and st.ledger.peak <= st.ledger.budget
        c.CloseSession(ref(r.id))


def test_a_prefetched_session_never_continued_does_not_hold_its_room_against_a_resume():
    with running_server(budget="auto:0.25", plan_sessions=10, plan_context=CTX) as (c, st):
        ids, prompts = three_paused(c)
        a, b, cc = ids
        c.Prefetch(pb.PrefetchRequest(session_id=a))      # evicts b
        c.wait(pb.EVENT_KIND_SWAP_IN, a)
        c.wait(pb.EVENT_KIND_SWAP_OUT, b)
        c.CloseSession(ref(cc))
        x = c.create(prompt(99), max_new=2, layers=(10,), context=CTX)   # takes cc's room, paused after a's prefetch
        c.wait(pb.EVENT_KIND_STOPPED, x.id)
        # b is continued: a (prefetched, never continued) is now the least recently paused, and
        # leaves for b as any paused session would
        c.Continue(ref(b))
        c.wait(pb.EVENT_KIND_STOPPED, b, pred=lambda e: e.session.position.token_index == 1)
        assert info(c, a).kv_location == HOST
        assert [e for e in c.backlog if e.kind == pb.EVENT_KIND_SWAP_OUT and e.session_id == a]
        done = finish_all(c, [a, b])
        assert done[a] == st.engine.reference(prompts[0], 3) and done[b] == st.engine.reference(prompts[1], 3)


def _continue_both_while_busy(c, st, x, y):
    """x and y continued at once while the worker is busy: y's turn comes first by fair turns,
    but its KV is on the host, so resident x goes first."""
    hold = threading.Event()
    st.scheduler.submit(lambda: hold.wait(5))
    calls = [c.Continue.future(ref(x)), c.Continue.future(ref(y))]
    time.sleep(0.3)
    hold.set()
    for f in calls:
        f.result(timeout=30)


def test_the_scheduler_prefetches_the_next_in_line_into_free_budget_while_the_current_one_computes():
    with running_server(budget="auto:0.25", plan_sessions=10, plan_context=CTX) as (c, st):
        ids, prompts = three_paused(c)
        y, x, z = ids          # y was evicted (least recently paused); x and z are resident
        assert info(c, y).kv_location == HOST
        c.CloseSession(ref(z))  # free room for one
        closed = c.wait(pb.EVENT_KIND_CLOSED, z)
        _continue_both_while_busy(c, st, x, y)
        swap_in = c.wait(pb.EVENT_KIND_SWAP_IN, y)
        assert swap_in.text == "prefetch: next in line"
        tx = c.wait(pb.EVENT_KIND_TOKEN, x)
        ty = c.wait(pb.EVENT_KIND_TOKEN, y)
        assert swap_in.seq < tx.seq < ty.seq   # fetched before x's turn, y runs right after
        assert not [e for e in c.backlog if e.kind == pb.EVENT_KIND_SWAP_IN and e.session_id == y
                    and swap_in.seq < e.seq < ty.seq]
        assert not [e for e in c.backlog if e.kind == pb.EVENT_KIND_SWAP_OUT and closed.seq < e.seq < ty.seq], \
            "the prefetch used free budget: nothing was evicted for it"
        assert st.scheduler.prefetches["next_in_line"] >= 1
        for sid in (x, y):     # their next stops, so that finish_all continues each once
            c.wait(pb.EVENT_KIND_STOPPED, sid)
        done = finish_all(c, [x, y])
        assert done[x] == st.engine.reference(prompts[1], 3) and done[y] == st.engine.reference(prompts[0], 3)
        assert st.ledger.peak <= st.ledger.budget


def test_the_next_in_line_prefetch_evicts_nobody_when_the_budget_is_full():
    with running_server(budget="auto:0.25", plan_sessions=10, plan_context=CTX) as (c, st):
        ids, prompts = three_paused(c)
        y, x, z = ids          # y on the host; x and z resident: no free room
        _continue_both_while_busy(c, st, x, y)
        tx = c.wait(pb.EVENT_KIND_TOKEN, x)
        swap_in = c.wait(pb.EVENT_KIND_SWAP_IN, y)   # y's own turn brings it back, evicting z then
        assert swap_in.text != "prefetch: next in line"
        assert tx.seq < swap_in.seq
        c.wait(pb.EVENT_KIND_TOKEN, y)
        assert st.scheduler.prefetches["next_in_line"] == 0
        for sid in (x, y):     # their next stops, so that finish_all continues each once
            c.wait(pb.EVENT_KIND_STOPPED, sid)
        done = finish_all(c, ids)
        for sid, p in zip(ids, prompts):
            assert done[sid] == st.engine.reference(p, 3)
        assert st.ledger.peak <= st.ledger.budget


def test_many_sessions_with_prefetch_hints_give_the_reference_tokens():
    """Users who look at (prefetch) a session before continuing it, under a budget of a third of the KV."""
    n, new = 9, 3
    with running_server(budget="auto:0.34", plan_sessions=n, plan_context=CTX) as (c, st):
        prompts = [prompt(200 + i, CTX - new + 1) for i in range(n)]
        ids = [c.create(p, max_new=new, layers=(10, 20, 30), context=CTX).id for p in prompts]
        finished = {}

        def look_then_continue(sid):
            try:
                c.Prefetch(pb.PrefetchRequest(session_id=sid))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            time.sleep(0.02)
            c.Continue(ref(sid))

        while len(finished) < n:
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR), None, 120)
            assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
            if ev.kind == pb.EVENT_KIND_FINISHED:
                finished[ev.session_id] = list(ev.session.generated_tokens)
            else:
                threading.Timer(0.03, look_then_continue, [ev.session_id]).start()
        for sid, p in zip(ids, prompts):
            assert finished[sid] == st.engine.reference(p, new)
        assert st.ledger.peak <= st.ledger.budget
        assert sum(st.scheduler.prefetches.values()) > 0
