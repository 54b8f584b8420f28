"""Data breakpoints over real gRPC on the CPU with tiny-40l: stop at the first stop point where
a condition over a tensor becomes true, checked on the server at every stop point."""
import random

import grpc
import pytest

from djinn.v1 import djinn_pb2 as pb
from harness import Client, running_server

DATA = pb.STOP_REASON_DATA_BREAKPOINT


def prompt(seed, n=10, vocab=512):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def db(i, tensor, condition, hit=""):
    return pb.DataBreakpoint(id=i, tensor=tensor, condition=condition, hit_condition=hit)


def set_dbs(c, sid, *dbs):
    return c.SetDataBreakpoints(pb.SetDataBreakpointsRequest(session_id=sid, breakpoints=list(dbs)))


def stops_until_finished(c, sid, timeout=60.0):
    """(token, layer, point, reason, hit ids, text) of each stop, continuing each, until FINISHED."""
    out = []
    while True:
        ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR), sid, timeout)
        assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
        if ev.kind == pb.EVENT_KIND_FINISHED:
            return out
        p = ev.session.position
        out.append((p.token_index, p.layer, p.point, ev.stop_reason, list(ev.session.hit_breakpoint_ids), ev.text))
        c.Continue(pb.SessionRef(session_id=sid))


def test_stops_where_the_condition_becomes_true_not_while_it_stays_true():
    with running_server() as (c, st):
        toks = prompt(1)
        s = c.create(toks, max_new=3, stop_on_entry=True)
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        r = set_dbs(c, s.id, db(4, "hidden", "layer >= 7 and token == 1 and max(abs(hidden)) > 0"))
        assert r.breakpoints[0].verified and r.breakpoints[0].message == "checked where hidden exists (every stop point)"
        c.Continue(pb.SessionRef(session_id=s.id))
        stops = stops_until_finished(c, s.id)
        # true from layers.7 of pass 1 to the end of that pass: one stop, where it became true
        assert stops == [(1, 7, pb.STOP_POINT_LAYER, DATA, [4],
                          "data breakpoint 4: layer >= 7 and token == 1 and max(abs(hidden)) > 0 became true at layers.7")]


def test_the_first_point_where_a_real_activation_crosses_a_threshold():
    with running_server() as (c, st):
        toks = prompt(2)
        ref = c.create(toks, max_new=1, stop_on_entry=True)
        c.wait(pb.EVENT_KIND_STOPPED, ref.id)
        values = []   # max |hidden| at every stop point of the prefill, stepping one sub-layer at a time
        for _ in range(40 * 3):
            info = c.GetSession(pb.SessionRef(session_id=ref.id))
            v = c.Evaluate(pb.EvaluateRequest(session_id=ref.id, expression="max(abs(hidden))")).scalar
            values.append(((info.position.layer, info.position.point), v))
            if len(values) == 40 * 3:
                break                                            # layers.39.mlp: a step would end the pass
            c.Step(pb.StepRequest(session_id=ref.id, kind=pb.STEP_KIND_SUBLAYER))
            c.wait(pb.EVENT_KIND_STOPPED, ref.id)
        c.CloseSession(pb.SessionRef(session_id=ref.id))
        ordered = sorted(v for _, v in values)
        threshold = ordered[len(ordered) // 2]                   # the median: crossed somewhere mid-pass
        first = next(where for where, v in values if v > threshold)
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=1, data_breakpoints=[
            db(1, "hidden", f"max(abs(hidden)) > {threshold!r}")]))
        ev = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.stop_reason == DATA and list(ev.session.hit_breakpoint_ids) == [1]
        assert (ev.session.position.layer, ev.session.position.point) == first
        assert c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="max(abs(hidden))")).scalar > threshold


def test_hit_condition_counts_the_times_it_became_true():
    with running_server() as (c, st):
        # true at layers.3 (and its attn, mlp points) of every pass: becomes true once per pass
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(3), max_new_tokens=4, data_breakpoints=[
            db(2, "hidden", "layer == 3 and norm(hidden) > 0", hit=">= 3")]))
        stops = stops_until_finished(c, s.id)
        assert [(t, l, p) for t, l, p, *_ in stops] == [(2, 3, pb.STOP_POINT_LAYER), (3, 3, pb.STOP_POINT_LAYER)]


def test_a_sublayer_tensor_is_checked_only_where_it_exists():
    with running_server() as (c, st):
        s = c.create(prompt(4), max_new=1, stop_on_entry=True)
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        r = set_dbs(c, s.id, db(1, "mlp_out", "layer == 2 and norm(mlp_out) > 0"),
                    db(2, "attn_out", "layer == 5 and norm(attn_out) > norm(hidden) * 0"))
        assert [b.message for b in r.breakpoints] == [
            "checked where mlp_out exists (after the MLP)",
            "checked where attn_out, hidden exist (after attention and after the MLP)"]
        c.Continue(pb.SessionRef(session_id=s.id))
        stops = stops_until_finished(c, s.id)
        assert [(l, p, ids) for _, l, p, _, ids, _ in stops] == [(2, pb.STOP_POINT_MLP, [1]), (5, pb.STOP_POINT_ATTN, [2])]


def test_a_condition_that_fails_stops_once_and_says_why():
    with running_server() as (c, st):
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(5), max_new_tokens=2, data_breakpoints=[
            db(9, "hidden", "any(hidden @ hidden > 0)")]))           # [T, 128] @ [T, 128]: shapes do not match
        stops = stops_until_finished(c, s.id)
        assert len(stops) == 1 and stops[0][:5] == (0, 0, pb.STOP_POINT_LAYER, DATA, [9])
        assert stops[0][5].startswith("data breakpoint 9: condition error: ") and "'@'" in stops[0][5]


def test_a_data_breakpoint_where_a_step_stops_joins_that_stop():
    with running_server() as (c, st):
        s = c.create(prompt(6), max_new=1, layers=(4,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        set_dbs(c, s.id, db(3, "hidden", "layer == 5 and norm(hidden) > 0"))
        c.Step(pb.StepRequest(session_id=s.id, kind=pb.STEP_KIND_LAYER))
        ev = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.stop_reason == pb.STOP_REASON_STEP and ev.session.position.layer == 5
        assert list(ev.session.hit_breakpoint_ids) == [3] and "data breakpoint 3" in ev.text
        c.Continue(pb.SessionRef(session_id=s.id))
        assert stops_until_finished(c, s.id) == []               # still true at 5.attn, 5.mlp: no more stops


def test_each_client_has_its_own_set_and_sees_only_its_ids():
    with running_server() as (anon, st):
        a, b = Client.connect(st.address, client="a"), Client.connect(st.address, client="b")
        s = a.create(prompt(7), max_new=1, stop_on_entry=True)
        a.wait(pb.EVENT_KIND_STOPPED, s.id)
        set_dbs(a, s.id, db(1, "hidden", "layer == 6 and norm(hidden) > 0"))
        set_dbs(b, s.id, db(1, "hidden", "layer == 6 and norm(hidden) > 0"), db(2, "hidden", "layer == 8 and norm(hidden) > 0"))
        set_dbs(b, s.id)                                          # empty: clears b's set only
        a.Continue(pb.SessionRef(session_id=s.id))
        ev = a.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.session.position.layer == 6 and list(ev.session.hit_breakpoint_ids) == [1]
        assert list(b.wait(pb.EVENT_KIND_STOPPED, s.id, pred=lambda e: e.session.position.layer == 6)
                    .session.hit_breakpoint_ids) == []
        d = a.Detach(pb.DetachRequest())
        assert d.breakpoints_removed == 1
        a.Continue(pb.SessionRef(session_id=s.id))
        b.wait(pb.EVENT_KIND_FINISHED, s.id)


@pytest.mark.parametrize("bad,why", [
    (db(1, "hiden", "norm(hiden) > 1"), "data breakpoint 1: no tensor 'hiden' to watch; one of: attn_out, hidden,"),
    (db(1, "$1", "norm($1) > 1"), "data breakpoint 1: '$1' is an Evaluate result, dropped when the session resumes"),
    (db(1, "hidden", ""), "data breakpoint 1: needs a condition over 'hidden', e.g. max(abs(hidden)) > 1000"),
    (db(1, "hidden", "norm(hidden) >"), "data breakpoint 1: condition: unexpected end of expression"),
    (db(1, "hidden", "norm(hidden) > norm($2)"), "data breakpoint 1: condition: '$2' is an Evaluate result"),
    (db(1, "hidden", "norm(hiden) > 1"), "data breakpoint 1: condition: unknown name 'hiden'; available: attn_out,"),
    (db(1, "hidden", "norm(mlp_out) > 1"), "data breakpoint 1: its condition does not use 'hidden', the tensor it watches"),
    (db(1, "hidden", "norm(hidden) > 1", hit="lots"), "data breakpoint 1: hit condition 'lots' is not one of"),
    (db(1, "hidden", "x.shape"), "data breakpoint 1: condition: attribute access is not allowed"),
])
def test_refusals_are_invalid_argument_and_change_nothing(bad, why):
    with running_server() as (c, st):
        s = c.create(prompt(8), max_new=1, stop_on_entry=True)
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        set_dbs(c, s.id, db(7, "hidden", "layer == 2 and norm(hidden) > 0"))
        with pytest.raises(grpc.RpcError) as e:
            set_dbs(c, s.id, bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(why), e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(8), max_new_tokens=1, data_breakpoints=[bad]))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(why)
        c.Continue(pb.SessionRef(session_id=s.id))               # the earlier set still holds
        ev = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert ev.stop_reason == DATA and list(ev.session.hit_breakpoint_ids) == [7]


def test_duplicate_ids_too_many_and_unknown_sessions_are_refused():
    with running_server() as (c, st):
        s = c.create(prompt(9), max_new=1, stop_on_entry=True)
        cases = [([db(1, "hidden", "norm(hidden) > 1")] * 2, grpc.StatusCode.INVALID_ARGUMENT,
                  "data breakpoint 1: id 1 is used twice"),
                 ([db(i, "hidden", "norm(hidden) > 1") for i in range(65)], grpc.StatusCode.INVALID_ARGUMENT,
                  "65 data breakpoints; the limit is 64 per client and session")]
        for dbs, code, why in cases:
            with pytest.raises(grpc.RpcError) as e:
                set_dbs(c, s.id, *dbs)
            assert e.value.code() == code and e.value.details() == why
        with pytest.raises(grpc.RpcError) as e:
            set_dbs(c, 999, db(1, "hidden", "norm(hidden) > 1"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
