"""Time travel inside a forward pass (runtime/history.py), over real gRPC with the real engine and
a tiny model on the CPU: StepBack / RestartPass restore an earlier stop point of the current pass;
going on from there gives bit-identical tensors, tokens and logits to never having gone back; an
edit made after going back acts exactly as the same edit made on the first arrival; the snapshots'
bytes are capped (going back past the cap re-runs from an earlier snapshot) and counted; refusals
are FAILED_PRECONDITION and touch nobody else."""
import random
import time

import grpc
import pytest
import torch

from djinn.runtime.session import POINTS
from djinn.v1 import djinn_pb2 as pb
from harness import running_server

N_LAYERS = 4                        # tiny-4l: 12 stop points per pass
STOPPED_OR_DONE = (pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR)


def prompt(seed, n=8, vocab=300):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def server(**kw):
    return running_server(model="tiny-4l", **kw)


def index(ev_or_info):
    p = (ev_or_info.session if hasattr(ev_or_info, "session") else ev_or_info).position
    return p.token_index, p.layer * len(POINTS) + p.point - 1     # STOP_POINT_LAYER = 1, ATTN = 2, MLP = 3


def hidden(c, sid, name="hidden"):
    """The tensor's bytes, exactly as the server holds them."""
    return b"".join(ch.data for ch in c.GetTensor(pb.GetTensorRequest(session_id=sid, name=name)))


def stopped(c, sid):
    ev = c.wait_any(STOPPED_OR_DONE, sid)
    assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
    return ev


def step(c, sid):
    c.Step(pb.StepRequest(session_id=sid, kind=pb.STEP_KIND_SUBLAYER))
    return stopped(c, sid)


def back(c, sid, to=pb.STEP_BACK_TARGET_PREVIOUS_POINT):
    c.StepBack(pb.StepBackRequest(session_id=sid, to=to))
    ev = stopped(c, sid)
    assert ev.kind == pb.EVENT_KIND_STOPPED and ev.stop_reason == pb.STOP_REASON_STEP_BACK, ev
    return ev


def refused(fn, needle):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert needle in e.value.details(), e.value.details()


def run_to_end(c, sid):
    """Continues the paused session, and every stop after, to its end."""
    while True:
        c.Continue(pb.SessionRef(session_id=sid))
        ev = stopped(c, sid)
        if ev.kind == pb.EVENT_KIND_FINISHED:
            return ev


def test_stepping_back_at_every_point_then_going_on_is_bit_identical():
    with server() as (c, st):
        toks = prompt(1)
        ref_tokens, ref_logits = st.engine.reference(toks, 3, with_logits=True)
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=3, stop_on_entry=True,
                                                    time_travel=True))
        obj = st.scheduler.get(s.id)
        seen, ev, visited = {}, stopped(c, s.id), 0
        while ev.kind == pb.EVENT_KIND_STOPPED:
            here, now = index(ev), hidden(c, s.id)
            seen[here] = now
            visited += 1
            if here[1] > 0:                   # one point back: the tensors it had then
                was = back(c, s.id)
                assert index(was) == (here[0], here[1] - 1)
                assert hidden(c, s.id) == seen[index(was)]
                info = c.GetSession(pb.SessionRef(session_id=s.id))
                assert info.state == pb.SESSION_STATE_PAUSED and info.history.points == here[1]
                again = step(c, s.id)         # and forward again: the same numbers
                assert index(again) == here and hidden(c, s.id) == now
            ev = step(c, s.id)
        assert ev.kind == pb.EVENT_KIND_FINISHED and visited == 3 * N_LAYERS * len(POINTS)
        assert list(ev.session.generated_tokens) == ref_tokens
        assert torch.equal(obj.last_logits, ref_logits)         # bit for bit
        assert obj.history.nbytes() == 0 and obj.history.info()["points"] == 0   # dropped when it ended


def test_reverse_continue_goes_to_the_previous_breakpoint_and_restart_reruns_the_pass():
    with server() as (c, st):
        toks = prompt(2)
        ref_tokens, ref_logits = st.engine.reference(toks, 2, with_logits=True)
        bps = [pb.Breakpoint(id=1, layer=1), pb.Breakpoint(id=2, layer=2, point=pb.STOP_POINT_ATTN)]
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=2, breakpoints=bps,
                                                    time_travel=True))
        assert index(stopped(c, s.id)) == (0, 3)
        at3 = hidden(c, s.id)
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 7)
        step(c, s.id)
        assert index(step(c, s.id)) == (0, 9)

        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)
        assert index(ev) == (0, 7) and list(ev.session.hit_breakpoint_ids) == [2]
        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)
        assert index(ev) == (0, 3) and list(ev.session.hit_breakpoint_ids) == [1] and hidden(c, s.id) == at3
        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)
        assert index(ev) == (0, 0) and "no breakpoint before layers.1" in ev.text
        refused(lambda: c.StepBack(pb.StepBackRequest(session_id=s.id)), "start of the pass")

        c.Continue(pb.SessionRef(session_id=s.id))          # the breakpoints fire again on the re-run
        assert index(stopped(c, s.id)) == (0, 3)
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 7)
        info = c.RestartPass(pb.SessionRef(session_id=s.id))
        assert info.state == pb.SESSION_STATE_PAUSED and index(info) == (0, 0)
        ev = stopped(c, s.id)
        assert ev.stop_reason == pb.STOP_REASON_RESTART and index(ev) == (0, 0)
        refused(lambda: c.RestartPass(pb.SessionRef(session_id=s.id)), "already at the start")

        for _ in range(3):                                   # to pass 1 (decode), layers.1: restart it from layers.2.attn
            c.Continue(pb.SessionRef(session_id=s.id))
            stopped(c, s.id)
        c.Continue(pb.SessionRef(session_id=s.id))
        ev = stopped(c, s.id)
        assert index(ev) == (1, 7)
        decode7 = hidden(c, s.id)
        c.RestartPass(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (1, 0)
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (1, 3)
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (1, 7) and hidden(c, s.id) == decode7
        done = run_to_end(c, s.id)
        assert list(done.session.generated_tokens) == ref_tokens
        assert torch.equal(st.scheduler.get(s.id).last_logits, ref_logits)


def test_reverse_continue_stops_only_where_the_breakpoint_fired_going_forward():
    """Conditions and hit counts: a breakpoint whose condition was false at a point, or whose hit
    condition did not hold for the count it had reached there, is passed going back too; going back
    restores the hit counts of that point, so going on again stops where the first run stopped."""
    with server() as (c, st):
        toks = prompt(7)
        ref_tokens, _ = st.engine.reference(toks, 2, with_logits=True)
        bps = [pb.Breakpoint(id=1, layer=1, condition="token >= 1"),      # decode passes only
               pb.Breakpoint(id=2, layer=2, hit_condition="== 1"),        # the first pass only
               pb.Breakpoint(id=3, layer=3)]                              # always
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=2, breakpoints=bps,
                                                    time_travel=True))
        assert index(stopped(c, s.id)) == (0, 6)
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 9)
        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)
        assert index(ev) == (0, 6) and list(ev.session.hit_breakpoint_ids) == [2]
        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)    # layers.1's condition was false there
        assert index(ev) == (0, 0) and "no breakpoint before layers.2" in ev.text
        assert list(ev.session.hit_breakpoint_ids) == []
        # going on: the counts are those of the pass start, so "== 1" holds at layers.2 again
        c.Continue(pb.SessionRef(session_id=s.id))
        ev = stopped(c, s.id)
        assert index(ev) == (0, 6) and list(ev.session.hit_breakpoint_ids) == [2]
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 9)
        c.Continue(pb.SessionRef(session_id=s.id))      # the decode pass: layers.1 fires, layers.2 (2nd hit) not
        ev = stopped(c, s.id)
        assert index(ev) == (1, 3) and list(ev.session.hit_breakpoint_ids) == [1]
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (1, 9)
        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)    # past layers.2: its hit condition failed
        assert index(ev) == (1, 3) and list(ev.session.hit_breakpoint_ids) == [1]
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (1, 9)
        assert [bp.hits for bp in st.scheduler.get(s.id).breakpoints[next(iter(st.scheduler.get(s.id).breakpoints))]] == [1, 2, 2]
        # a plain breakpoint set after the pass went past layers.2 fires there going back; a conditional one does not
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, breakpoints=[
            pb.Breakpoint(id=4, layer=2, point=pb.STOP_POINT_ATTN, condition="layer == 2"), pb.Breakpoint(id=5, layer=1, point=pb.STOP_POINT_MLP)]))
        ev = back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)
        assert index(ev) == (1, 5) and list(ev.session.hit_breakpoint_ids) == [5]
        done = run_to_end(c, s.id)
        assert list(done.session.generated_tokens) == ref_tokens


def walk(c, sid, upto):
    """Sublayer steps from where sid is to point `upto` of the pass: each point's hidden bytes."""
    out = {}
    while True:
        ev = step(c, sid)
        out[index(ev)[1]] = hidden(c, sid)
        if index(ev)[1] == upto:
            return out


def test_an_edit_after_going_back_acts_as_the_same_edit_on_first_arrival():
    with server() as (c, st):
        toks = prompt(3)
        ref_tokens, ref_logits = st.engine.reference(toks, 3, with_logits=True)
        edit = lambda sid: c.SetTensor(pb.SetTensorRequest(session_id=sid, name="hidden", mode=pb.WRITE_MODE_ADD,  # noqa: E731
                                                           has_scalar=True, scalar=0.75))
        bp = [pb.Breakpoint(id=1, layer=2)]
        # b: the edit at layers.2.attn of the prefill, made on the first arrival there
        b = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=3, breakpoints=bp))
        assert index(stopped(c, b.id)) == (0, 6)
        b_before = {6: hidden(c, b.id), **walk(c, b.id, 7)}
        edit(b.id)
        b_after = walk(c, b.id, 11)
        b_end = run_to_end(c, b.id)

        # a: goes past the point, comes back, makes the same edit there
        a = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=3, breakpoints=bp,
                                                    time_travel=True))
        assert index(stopped(c, a.id)) == (0, 6)
        a_before = {6: hidden(c, a.id), **walk(c, a.id, 9)}
        assert index(back(c, a.id)) == (0, 8)
        assert index(back(c, a.id)) == (0, 7) and hidden(c, a.id) == a_before[7]
        edit(a.id)
        a_after = walk(c, a.id, 11)
        # before the edited point: the same as without any edit (b's numbers before its edit)
        assert a_before[6] == b_before[6] and a_before[7] == b_before[7]
        # from it on: different from the unedited run, identical to the edit made on first arrival
        assert a_after[8] != a_before[8] and a_after[9] != a_before[9]
        assert a_after == b_after
        # going back before the edit undoes it: the unedited numbers again
        assert index(back(c, a.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)) == (0, 6)
        assert hidden(c, a.id) == a_before[6]
        assert walk(c, a.id, 8) == {7: a_before[7], 8: a_before[8]}
        assert index(back(c, a.id)) == (0, 7)
        edit(a.id)                                          # and doing it again gives the edited run again
        a_end = run_to_end(c, a.id)
        assert list(a_end.session.generated_tokens) == list(b_end.session.generated_tokens)
        assert torch.equal(st.scheduler.get(a.id).last_logits, st.scheduler.get(b.id).last_logits)
        assert not torch.equal(st.scheduler.get(a.id).last_logits, ref_logits)


def test_snapshots_are_capped_counted_and_dropped_at_the_pass_end():
    with server() as (c, st):
        toks = prompt(4)
        ref_tokens, ref_logits = st.engine.reference(toks, 2, with_logits=True)
        cap = 10_000                                          # a prefill point holds 2-8 KB here: a few fit
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=2, stop_on_entry=True,
                                                    time_travel=True, history_bytes=cap))
        assert s.history.cap_bytes == cap and s.history.points <= 1   # (the worker may have begun it already)
        stopped(c, s.id)
        seen = {0: hidden(c, s.id), **walk(c, s.id, 11)}
        info = c.GetSession(pb.SessionRef(session_id=s.id)).history
        assert info.points == 12 and 0 < info.snapshots < 12 and info.dropped == 12 - info.snapshots
        assert 0 < info.bytes <= cap and info.device_bytes == info.bytes   # small: on the device...
        obj = st.scheduler.get(s.id)
        L = st.ledger                                          # ...and in the budget's ledger
        assert L.accounted() == L.fixed + sum(v.memory.device_bytes() for v in st.scheduler.sessions.values()) + info.bytes
        tel = st.telemetry_sample()
        mine = [m for m in tel.sessions if m.session_id == s.id][0]
        assert mine.history_bytes == info.bytes == mine.history_device_bytes
        assert tel.accounted_bytes == L.accounted()

        texts = []
        for k in range(10, -1, -1):                           # all the way back, past the cap: re-runs
            ev = back(c, s.id)
            assert index(ev) == (0, k) and hidden(c, s.id) == seen[k], k
            texts.append(ev.text)
        assert sum("re-ran" in t for t in texts) >= 5, texts
        assert c.GetSession(pb.SessionRef(session_id=s.id)).history.points == 1
        obj.history.device_max = 0                            # from here on, snapshots go to the host...
        walk(c, s.id, 5)
        info = c.GetSession(pb.SessionRef(session_id=s.id)).history
        assert info.points == 6 and info.bytes - info.device_bytes == 2048   # ...at layer inputs only (layers.1)
        ev = back(c, s.id)                                    # layers.1.attn: one piece from layers.1
        assert index(ev) == (0, 4) and "re-ran 1 piece(s) from layers.1," in ev.text and hidden(c, s.id) == seen[4]
        walk(c, s.id, 5)
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, breakpoints=[pb.Breakpoint(id=1, layer=1)]))
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (1, 3)               # the next pass: its own history only
        assert c.GetSession(pb.SessionRef(session_id=s.id)).history.points == 4
        done = run_to_end(c, s.id)
        assert list(done.session.generated_tokens) == ref_tokens
        assert torch.equal(obj.last_logits, ref_logits)


def test_refusals_are_specific_and_touch_nobody_else():
    with server() as (c, st):
        toks = prompt(5)
        ref = st.engine.reference(toks, 4)
        plain = c.create(toks, max_new=2, layers=(1,))
        assert index(stopped(c, plain.id)) == (0, 3)
        refused(lambda: c.StepBack(pb.StepBackRequest(session_id=plain.id)), "keeps no history")
        refused(lambda: c.RestartPass(pb.SessionRef(session_id=plain.id)), "keeps no history")
        with pytest.raises(grpc.RpcError) as e:
            c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, time_travel=True, history_bytes=1 << 40))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "--history-mb" in e.value.details()

        tt = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=1, stop_on_entry=True,
                                                     time_travel=True))
        stopped(c, tt.id)
        refused(lambda: c.StepBack(pb.StepBackRequest(session_id=tt.id)), "start of the pass")
        other = c.create(toks, max_new=4)                      # runs on meanwhile
        for _ in range(5):
            step(c, tt.id)
        for _ in range(3):
            back(c, tt.id)
        c.RestartPass(pb.SessionRef(session_id=tt.id))
        stopped(c, tt.id)
        assert list(c.wait(pb.EVENT_KIND_FINISHED, other.id).session.generated_tokens) == ref
        c.Continue(pb.SessionRef(session_id=tt.id))
        c.wait(pb.EVENT_KIND_FINISHED, tt.id)
        refused(lambda: c.StepBack(pb.StepBackRequest(session_id=tt.id)), "not paused")
        with pytest.raises(grpc.RpcError) as e:
            c.StepBack(pb.StepBackRequest(session_id=tt.id, to=7))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(run_to_end(c, plain.id).session.generated_tokens) == ref[:2]


def test_going_back_brings_a_swapped_out_session_in_and_a_neighbour_is_untouched():
    with server(swap_policy="eager") as (c, st):              # every paused session leaves the device
        toks = prompt(6)
        ref_tokens, ref_logits = st.engine.reference(toks, 3, with_logits=True)
        bps = [pb.Breakpoint(id=1, layer=1)]
        a = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=3, breakpoints=bps,
                                                    time_travel=True))
        b = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=3, breakpoints=bps))
        for sid in (a.id, b.id):                              # both at layers.1 of the prefill, then of decode 1
            assert index(stopped(c, sid)) == (0, 3)
            c.Continue(pb.SessionRef(session_id=sid))
        for sid in (a.id, b.id):
            assert index(stopped(c, sid)) == (1, 3)
        at3 = hidden(c, a.id)
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=a.id, breakpoints=[pb.Breakpoint(id=2, layer=3)]))
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=b.id))
        c.Continue(pb.SessionRef(session_id=a.id))            # a and b run decode 1 from layers.1 (batched when their turns meet)
        c.Continue(pb.SessionRef(session_id=b.id))
        assert index(stopped(c, a.id)) == (1, 9)
        end = time.monotonic() + 10                           # a's eager swap-out (once its host region is ready)
        while c.GetSession(pb.SessionRef(session_id=a.id)).kv_location != pb.KV_LOCATION_HOST:
            assert time.monotonic() < end, "a was not swapped out"
            time.sleep(0.01)
        ev = back(c, a.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)   # no breakpoint at layers.1 now: the start
        assert index(ev) == (1, 0)
        walk(c, a.id, 3)
        assert hidden(c, a.id) == at3
        assert list(c.wait(pb.EVENT_KIND_FINISHED, b.id).session.generated_tokens) == ref_tokens
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=a.id))
        done = run_to_end(c, a.id)
        assert list(done.session.generated_tokens) == ref_tokens
        assert torch.equal(st.scheduler.get(a.id).last_logits, ref_logits)
        assert torch.equal(st.scheduler.get(b.id).last_logits, ref_logits)


def test_a_rerun_waits_for_the_turn_on_the_worker_a_restore_from_a_snapshot_does_not():
    from djinn.runtime import history
    from djinn.runtime.scheduler import _Deferred

    with server() as (c, st):
        toks = prompt(7)
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=1, stop_on_entry=True,
                                                    time_travel=True))
        stopped(c, s.id)
        seen = walk(c, s.id, 6)
        sched, obj = st.scheduler, st.scheduler.get(s.id)
        sched.call(lambda: obj.history._drop(5))              # as the cap would: layers.1.mlp must be re-run

        def attempt():                                       # as if another session's turn were mid-pass
            was, sched._running = sched._running, object()
            try:
                return history.go_back(sched, obj, history.PREVIOUS_POINT)
            except _Deferred:
                return "deferred"
            finally:
                sched._running = was
        assert sched.call(attempt) == "deferred"
        assert index(c.GetSession(pb.SessionRef(session_id=s.id))) == (0, 6)   # nothing changed
        ev = back(c, s.id)                                     # between turns: it re-runs
        assert index(ev) == (0, 5) and "re-ran 1 piece(s) from layers.1.attn" in ev.text
        assert hidden(c, s.id) == seen[5]
        assert sched.call(attempt).startswith("back to layers.1.attn")   # a snapshot: no need to wait
        assert hidden(c, s.id) == seen[4]


def test_a_real_model_goes_back_edits_restarts_and_says_the_same_thing_again():
    """smollm2-135m (the CPU walkthrough's model): back from layers.20 to layers.10 of the prefill,
    a steering edit there changes everything after it; restarting the pass undoes it, and the
    text is then bit for bit the uninterrupted one (" Paris.")."""
    pytest.importorskip("gguf")
    from djinn.model.packaged import packaged_path
    try:
        packaged_path("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with running_server(model="smollm2-135m") as (c, st):
        toks = st.engine.tokenizer.encode("The capital of France is")
        ref_tokens, ref_logits = st.engine.reference(toks, 3, with_logits=True)
        assert "Paris" in st.engine.tokenizer.decode(ref_tokens)
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=3, time_travel=True,
                                                    breakpoints=[pb.Breakpoint(id=1, layer=10), pb.Breakpoint(id=2, layer=20)]))
        assert index(stopped(c, s.id)) == (0, 30)
        at10 = hidden(c, s.id)
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 60)
        at20 = hidden(c, s.id)
        assert index(back(c, s.id, pb.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT)) == (0, 30)
        assert hidden(c, s.id) == at10
        c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", mode=pb.WRITE_MODE_ADD, has_scalar=True, scalar=4.0))
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 60)
        assert hidden(c, s.id) != at20                          # the edit's effect, from layers.10 on
        c.RestartPass(pb.SessionRef(session_id=s.id))
        assert stopped(c, s.id).stop_reason == pb.STOP_REASON_RESTART
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, breakpoints=[pb.Breakpoint(id=2, layer=20)]))
        c.Continue(pb.SessionRef(session_id=s.id))
        assert index(stopped(c, s.id)) == (0, 60) and hidden(c, s.id) == at20   # the edit is undone
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id))
        done = run_to_end(c, s.id)
        assert list(done.session.generated_tokens) == ref_tokens
        assert torch.equal(st.scheduler.get(s.id).last_logits, ref_logits)


def test_device_snapshots_are_bounded_per_session_the_rest_go_to_the_host():
    from djinn.runtime.history import History

    with server() as (c, st):
        eng = st.engine
        s = eng.scratch_session(prompt(8), 1)
        s.history = h = History(cap_bytes=1 << 20, device_share=10_000)
        with eng.lock:
            eng.begin(s)
            for k in range(N_LAYERS * len(POINTS)):
                h.record(s, fits=lambda n: k < 6)             # and from point 6 on, the budget has no room
                if k < N_LAYERS * len(POINTS) - 1:
                    eng.advance(s)
        info = h.info()
        assert info["points"] == 12 and info["dropped"] == 0
        assert 0 < info["device_bytes"] <= 10_000 < info["bytes"]
        on_device = [k for k, cl in h.clones.items() if cl.on_device]
        assert on_device == list(range(len(on_device))) and 0 < len(on_device) < 6
        # past the device share, the residual stream at layer inputs only
        assert sorted(h.clones) == on_device + [k for k in range(len(on_device), 12) if k % len(POINTS) == 0]
        assert all(t.device.type == "cpu" for cl in h.clones.values() for t in cl.acts.values())


def test_going_back_past_the_cap_keeps_an_edit_made_on_the_way():
    with server() as (c, st):
        toks = prompt(9)
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=toks, max_new_tokens=1, stop_on_entry=True,
                                                    time_travel=True, history_bytes=10_000))
        stopped(c, s.id)
        first = walk(c, s.id, 4)
        c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", mode=pb.WRITE_MODE_ADD, has_scalar=True,
                                        scalar=0.75))
        edited = walk(c, s.id, 11)
        info = c.GetSession(pb.SessionRef(session_id=s.id)).history
        assert info.snapshots < 7 and info.bytes > 0                    # layers.2's clones are gone...
        ev = back(c, s.id)
        for k in range(9, 6, -1):
            ev = back(c, s.id)
            assert index(ev) == (0, k) and hidden(c, s.id) == edited[k], k   # ...the re-run keeps the edit
        assert "as edited" in ev.text, ev.text
        for k in (6, 5, 4):
            back(c, s.id)
        assert index(c.GetSession(pb.SessionRef(session_id=s.id))) == (0, 4) and hidden(c, s.id) == first[4]
        assert walk(c, s.id, 6)[6] != edited[6]                        # back at the edited point: undone
