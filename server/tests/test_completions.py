"""Completions (the Complete RPC) over real gRPC on the CPU with tiny-40l: tensor names at the
stop, $N results, position scalars, keyword arguments, functions with their signatures."""
import random

import grpc
import torch
import pytest

from djinn.inspect import expr
from djinn.runtime.catalog import TENSORS_AT, catalog
from djinn.runtime.completions import complete
from djinn.runtime.session import ATTN, LAYER, MLP
from djinn.v1 import djinn_pb2 as pb
from harness import running_server


def prompt(seed, n=7, vocab=512):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def comp(c, sid, text, column=0):
    return c.Complete(pb.CompleteRequest(session_id=sid, text=text, column=column))


def labels(r):
    return [i.label for i in r.items]


@pytest.fixture(scope="module")
def paused():
    """A session paused at layers.3.mlp of its prefill (7 tokens), with one $N result."""
    with running_server() as (c, st):
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(1), max_new_tokens=2, breakpoints=[
            pb.Breakpoint(id=1, layer=3, point=pb.STOP_POINT_MLP)]))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="hidden[0, :5]")).result_name == "$1"
        yield c, st, s.id


def test_tensor_names_at_the_stop_with_their_shapes(paused):
    c, st, sid = paused
    r = comp(c, sid, "norm(hi")
    assert labels(r) == ["hidden"] and (r.start, r.length) == (5, 2)
    item = r.items[0]
    assert item.type == "variable" and item.detail.startswith("f32[7, 128] residual stream [tokens, dim]")
    everything = labels(comp(c, sid, ""))
    for name in TENSORS_AT[MLP]:
        assert name in everything
    assert "mlp_out" in labels(comp(c, sid, "ml"))


def test_shapes_in_details_are_those_of_the_real_tensors(paused):
    c, st, sid = paused
    details = {i.label: i.detail for i in comp(c, sid, "").items}
    live = st.scheduler.sessions[sid]
    real = st.scheduler.call(lambda: {n: (list(e.get().shape), e.get().dtype) for n, e in catalog(st.engine, live).items()})
    short = {torch.float32: "f32", torch.int64: "i64"}
    for name in TENSORS_AT[MLP]:
        shape, dtype = real[name]
        assert details[name].startswith(f"{short[dtype]}{shape} "), (name, details[name], shape)


def test_results_and_scalars(paused):
    c, st, sid = paused
    r = comp(c, sid, "cos_sim(hidden[0], $")
    assert labels(r) == ["$1"] and r.items[0].detail.startswith("f32[5] Evaluate result")
    assert (r.start, r.length) == (19, 1)
    scal = {i.label: i.detail for i in comp(c, sid, "").items if i.type == "value"}
    assert scal["layer"] == "3 (layer at this stop)" and scal["point"] == "'mlp' (point at this stop)"
    assert scal["token"] == "0 (token at this stop)"


def test_functions_come_with_their_signatures(paused):
    c, st, sid = paused
    r = comp(c, sid, "me")
    assert labels(r) == ["mean"]
    assert r.items[0].type == "function" and r.items[0].detail == "mean(x, dim?): mean over dim (all elements when omitted); float32"
    fns = {i.label: i.detail for i in comp(c, sid, "").items if i.type == "function"}
    assert set(fns) == set(expr._FUNCS)
    assert fns["topk"].startswith("topk(x, k, dim?): ") and fns["clamp"].startswith("clamp(x, lo, hi): ")
    assert "and" in labels(comp(c, sid, "an"))


def test_keyword_arguments_inside_a_call_come_first(paused):
    c, st, sid = paused
    r = comp(c, sid, "softmax(logits[0], d")
    assert labels(r)[0] == "dim=" and r.items[0].type == "property"
    assert "keyword argument of softmax(x, dim?)" == r.items[0].detail
    assert "dim=" not in labels(comp(c, sid, "hidden[d"))              # inside brackets: no call
    assert "dim=" not in labels(comp(c, sid, "mean(x) + d"))          # the call is closed


def test_the_column_picks_the_word_before_the_cursor(paused):
    c, st, sid = paused
    text = "norm(hid) + mea"
    r = comp(c, sid, text, column=9)                                   # 1-based: the cursor after "hid"
    assert labels(r) == ["hidden"] and (r.start, r.length) == (5, 3)
    r = comp(c, sid, "'🙂' + hi", column=0)                            # UTF-16: the emoji is 2 units
    assert labels(r) == ["hidden"] and (r.start, r.length) == (7, 2)


def test_nothing_inside_strings_numbers_or_after_a_dot(paused):
    c, st, sid = paused
    for text in ('phase == "de', "1e", "12ab", "hidden.sh", "$x"):
        assert labels(comp(c, sid, text)) == [], text


def test_a_running_or_no_session_gets_names_functions_and_keywords():
    with running_server() as (c, st):
        none = comp(c, 0, "hid")
        assert labels(none) == ["hidden"] and "at a stop" in none.items[0].detail
        assert labels(comp(c, 0, "arg")) == ["argmax", "argmin", "argtopk"]
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(2), max_new_tokens=200))
        assert labels(comp(c, s.id, "mlp")) == ["mlp_out"]


def test_refusals():
    with running_server() as (c, st):
        with pytest.raises(grpc.RpcError) as e:
            comp(c, 999, "x")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            comp(c, 0, "abc", column=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "column 5 is outside the text (1..4" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            comp(c, 0, "abc", column=-1)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            comp(c, 0, "x" * 10_001)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 10000" in e.value.details()


def test_tensors_at_matches_the_catalog_at_every_point():
    with running_server() as (c, st):
        s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt(3), max_new_tokens=1, stop_on_entry=True))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        live = st.scheduler.sessions[s.id]
        for point in (LAYER, ATTN, MLP):
            assert tuple(st.scheduler.call(lambda: list(catalog(st.engine, live)))) == TENSORS_AT[point]
            c.Step(pb.StepRequest(session_id=s.id, kind=pb.STEP_KIND_SUBLAYER))
            c.wait(pb.EVENT_KIND_STOPPED, s.id)


def test_every_function_has_a_doc_line():
    for name, sig, doc in expr.functions():
        assert doc and sig.startswith(name + "("), name
    assert complete.__doc__
