"""Logpoints over real gRPC on the CPU with tiny-40l: a breakpoint with a log_message prints a
line (an EVENT_KIND_OUTPUT, formatted on the server) where its condition and hit condition
hold, and the session never stops for it."""
import random
import re

import grpc
import pytest
import torch

from djinn.runtime.logpoints import parse_message, show
from djinn.v1 import djinn_pb2 as pb
from harness import Client, running_server


def prompt(seed, n=12, vocab=512):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def logpoint(bp_id, layer, message, point=pb.STOP_POINT_LAYER, **kw):
    return pb.Breakpoint(id=bp_id, layer=layer, point=point, log_message=message, **kw)


def create(c, tokens, max_new, breakpoints=(), **kw):
    return c.CreateSession(pb.CreateSessionRequest(prompt_tokens=tokens, max_new_tokens=max_new,
                                                   breakpoints=list(breakpoints), **kw))


def run_to_end(c, sid, timeout=60.0):
    """Every event of the session up to its FINISHED (continuing any stop), in order."""
    seen = []
    while True:
        ev = c.wait_any((pb.EVENT_KIND_OUTPUT, pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR),
                        sid, timeout)
        assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
        seen.append(ev)
        if ev.kind == pb.EVENT_KIND_FINISHED:
            return seen
        if ev.kind == pb.EVENT_KIND_STOPPED:
            c.Continue(pb.SessionRef(session_id=sid))


def texts(events):
    return [e.text for e in events if e.kind == pb.EVENT_KIND_OUTPUT]


def test_a_logpoint_prints_values_the_debugger_would_show_and_never_stops():
    with running_server() as (c, st):
        toks = prompt(1)
        msg = "L{layer} t{token} n={norm(hidden)} {{ok}} p={phase} h={hidden[0, :3]}"
        a = create(c, toks, max_new=3, breakpoints=[logpoint(7, 5, msg)])
        events = run_to_end(c, a.id)
        assert not [e for e in events if e.kind == pb.EVENT_KIND_STOPPED]
        outs = [e for e in events if e.kind == pb.EVENT_KIND_OUTPUT]
        assert [e.breakpoint_id for e in outs] == [7, 7, 7] and all(e.session_id == a.id for e in outs)
        assert not any(e.HasField("session") for e in outs)      # no snapshot: an output is light
        assert list(events[-1].session.generated_tokens) == st.engine.reference(toks, 3)

        # The same prompt stopped at the same point: Evaluate shows the same numbers.
        b = c.create(toks, max_new=3, layers=(5,))
        want = []
        for k in range(3):
            ev = c.wait(pb.EVENT_KIND_STOPPED, b.id)
            ev_ = lambda e: c.Evaluate(pb.EvaluateRequest(session_id=b.id, expression=e)).value  # noqa: E731
            head = ev_("hidden[0, :3]").split(" ", 1)[1]             # "f32[3] [a, b, c]" -> "[a, b, c]"
            want.append(f"L5 t{k} n={ev_('norm(hidden)')} {{ok}} p={'prefill' if k == 0 else 'decode'} h={head}")
            c.Continue(pb.SessionRef(session_id=b.id))
        assert texts(events) == want


def test_condition_then_hit_condition_as_debuggers_do():
    with running_server() as (c, st):
        # passes 0..4; the condition holds for 1..4 (hits 1, 2, 3, 4); "% 2" prints hits 2 and 4
        s = create(c, prompt(2), max_new=5, breakpoints=[
            logpoint(1, 2, "t={token}", condition="token >= 1", hit_condition="% 2")])
        assert texts(run_to_end(c, s.id)) == ["t=2", "t=4"]


def test_an_evaluation_error_is_a_line_that_says_so_not_a_stop():
    with running_server() as (c, st):
        s = create(c, prompt(3), max_new=2, breakpoints=[
            logpoint(1, 3, "a={nope} b={layer}"),
            logpoint(2, 4, "never", condition="hidden @ hidden > 0"),          # shapes do not match
            logpoint(3, 6, "x={hidden[0, 999]}", point=pb.STOP_POINT_MLP)])   # out of range
        events = run_to_end(c, s.id)
        assert not [e for e in events if e.kind == pb.EVENT_KIND_STOPPED]
        lines = texts(events)
        assert len(lines) == 6
        assert re.fullmatch(r"a=<error: unknown name 'nope'; available: .*> b=3", lines[0])
        assert lines[1].startswith("logpoint 2: condition error: ") and "'@'" in lines[1]
        assert re.fullmatch(r"x=<error: index 999 out of range for dim 1 with size 128.*>", lines[2])


def test_a_logpoint_and_a_stop_at_the_same_point_both_happen_and_steps_print_too():
    with running_server() as (c, st):
        s = create(c, prompt(4), max_new=1, stop_on_entry=True, breakpoints=[
            logpoint(1, 0, "entry {layer}"), logpoint(2, 1, "attn {norm(attn_out)}", point=pb.STOP_POINT_ATTN),
            pb.Breakpoint(id=3, layer=1, point=pb.STOP_POINT_ATTN)])
        out = c.wait(pb.EVENT_KIND_OUTPUT, s.id)                   # printed where the entry stop happens
        stop = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert out.text == "entry 0" and out.seq < stop.seq and stop.stop_reason == pb.STOP_REASON_ENTRY
        c.Continue(pb.SessionRef(session_id=s.id))
        out = c.wait(pb.EVENT_KIND_OUTPUT, s.id)
        stop = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert out.text.startswith("attn ") and out.seq < stop.seq
        assert list(stop.session.hit_breakpoint_ids) == [3]
        n = c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="norm(attn_out)")).value
        assert out.text == f"attn {n}"


def test_only_the_client_that_set_the_logpoint_gets_its_lines():
    with running_server() as (anon, st):
        a = Client.connect(st.address, client="window-a")
        b = Client.connect(st.address, client="window-b")
        s = create(a, prompt(5), max_new=2, breakpoints=[logpoint(1, 9, "hi {token}")])
        assert texts(run_to_end(a, s.id)) == ["hi 0", "hi 1"]
        b.wait(pb.EVENT_KIND_FINISHED, s.id)                      # b sees the session...
        anon.wait(pb.EVENT_KIND_FINISHED, s.id)
        for other in (b, anon):                                     # ...but not a's lines
            assert not [e for e in other.backlog if e.kind == pb.EVENT_KIND_OUTPUT]
            assert other.events.empty() or all(e.kind != pb.EVENT_KIND_OUTPUT for e in list(other.events.queue))


def test_replay_gives_the_lines_again_to_their_client():
    with running_server() as (c, st):
        a = Client.connect(st.address, client="w")
        s = create(a, prompt(6), max_new=2, breakpoints=[logpoint(4, 2, "{token}")])
        run_to_end(a, s.id)
        again = Client.connect(st.address, client="w", since_seq=1)
        assert [e.text for e in (again.wait(pb.EVENT_KIND_OUTPUT, s.id) for _ in range(2))] == ["0", "1"]


def test_an_unchanged_logpoint_keeps_its_hit_count_across_set_breakpoints():
    with running_server() as (c, st):
        bp = logpoint(1, 30, "{token}", hit_condition="2")
        s = create(c, prompt(7), max_new=3, breakpoints=[bp, pb.Breakpoint(id=2, layer=35)])
        c.wait(pb.EVENT_KIND_STOPPED, s.id)          # pass 0 at layer 35: the logpoint has 1 hit
        c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, breakpoints=[bp]))
        c.Continue(pb.SessionRef(session_id=s.id))
        assert texts(run_to_end(c, s.id)) == ["1"]    # its 2nd hit is pass 1


def test_invalid_log_messages_are_refused_with_the_reason():
    with running_server() as (c, st):
        s = c.create(prompt(8), max_new=1, layers=(39,))
        bad = {"{": "'{' at column 1 is never closed", "a}": "'}' at column 2 closes nothing",
               "{}": "empty {} at column 1", "x {1 +}": "{1 +} at column 3: unexpected end of expression",
               "{x.shape}": "attribute access is not allowed", "{" + "a" * 2001 + "}": "limit is 2000"}
        r = c.SetBreakpoints(pb.SetBreakpointsRequest(session_id=s.id, breakpoints=[
            logpoint(i, 1, m) for i, m in enumerate(bad)] + [logpoint(99, 1, "{{fine}}")]))
        for status, why in zip(r.breakpoints, bad.values()):
            assert not status.verified and status.message.startswith("log message: ") and why in status.message, status
        assert r.breakpoints[-1].verified
        with pytest.raises(grpc.RpcError) as e:
            create(c, prompt(8), max_new=1, breakpoints=[logpoint(5, 2, "oops {")])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "breakpoint 5: log message: '{' at column 6 is never closed" in e.value.details()


def test_parse_message_pieces_and_escapes():
    assert parse_message('a{{b}}c {x} {s == "}"}') == (
        ("text", "a{b}c "), ("expr", "x"), ("text", " "), ("expr", 's == "}"'))
    assert parse_message("") == ()


def test_show_is_brief_for_tensors_and_plain_for_scalars():
    assert show(3) == "3" and show(2.0 / 3) == "0.666667" and show(True) == "true" and show("decode") == "decode"
    assert show(torch.tensor(1.5)) == "1.5" and show(torch.tensor([7])) == "7"
    assert show(torch.tensor([[1, 2], [3, 4]])) == "[[1, 2], [3, 4]]"
    assert show(torch.zeros(2, 0)) == "f32[2, 0] empty"
    x = torch.ones(4, 8)
    x[0, 0] = float("nan")
    assert re.fullmatch(r"f32\[4, 8\] μ=1 σ=0 ‖x‖=5\.568 nan=1", show(x)), show(x)


def test_batched_sessions_print_their_own_values():
    """Decode passes of sessions at one stop point run as one block: each logpoint reads its own row."""
    with running_server() as (c, st):
        bps = [pb.Breakpoint(id=1, layer=5, hit_condition="== 2"),       # both wait at layers.5 of pass 1
               logpoint(2, 20, "t{token} n={norm(hidden)} a={max(abs(attn_out))}", point=pb.STOP_POINT_ATTN)]
        alone = {}
        for seed in (11, 12):
            s = create(c, prompt(seed), max_new=4, breakpoints=bps)
            alone[seed] = texts(run_to_end(c, s.id))
        ids = {seed: create(c, prompt(seed), max_new=4, breakpoints=bps).id for seed in (11, 12)}
        pre = {seed: texts([c.wait(pb.EVENT_KIND_OUTPUT, sid)]) for seed, sid in ids.items()}   # the prefill's line
        for sid in ids.values():
            c.wait(pb.EVENT_KIND_STOPPED, sid)
        live = [st.scheduler.sessions[sid] for sid in ids.values()]
        st.scheduler.call(lambda: [st.scheduler.resume(v) for v in live])  # runnable together: one block
        for seed, sid in ids.items():
            assert pre[seed] + texts(run_to_end(c, sid)) == alone[seed]
        assert alone[11] != alone[12] and len(alone[11]) == 4
        assert st.scheduler.batched["rows"] >= 2 * st.scheduler.batched["pieces"] > 0   # they did share blocks
