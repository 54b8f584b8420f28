"""Small results are shown as values (issue 9): TensorSummary.values, the display line of small
and empty tensors, shape(x) as a list, topk's indices in EvaluateResponse.also, argtopk, and $N
being a copy. Unit tests of the formatting, then the real gRPC service on tiny-40l (CPU)."""
import math
import random

import grpc
import pytest
import torch

from djinn.inspect import tensors
from djinn.inspect.expr import ExprError, Limits, evaluate, evaluate_outcome
from djinn.inspect.tensors import (MAX_VALUES, format_summary_line, format_value, format_values,
                                   summarize)
from djinn.server import convert
from djinn.v1 import djinn_pb2 as pb
from harness import running_server

NAN, INF = float("nan"), float("inf")


def line(t: torch.Tensor) -> str:
    return format_summary_line(summarize(t))


# ----------------------------------------------------------------------------- formatting

def test_format_value_is_compact():
    assert format_value(457, "int64") == "457" and format_value(-3, "int8") == "-3"
    assert format_value(2 ** 63 - 1, "int64") == "9223372036854775807"     # exact, not 9.22337e+18
    assert format_value(1, "bool") == "true" and format_value(0, "bool") == "false"
    assert format_value(2.0, "float32") == "2" and format_value(0.5, "bfloat16") == "0.5"
    assert format_value(1 / 3, "float32") == "0.333333" and format_value(1234567.0) == "1.23457e+06"
    assert format_value(1e-7) == "1e-07" and format_value(-0.0) == "-0"
    assert [format_value(v) for v in (NAN, INF, -INF)] == ["nan", "inf", "-inf"]


def test_format_values_nests_like_python_lists():
    assert format_values([1, 2, 3], [3], "int64") == "[1, 2, 3]"
    assert format_values(range(6), [2, 3], "int64") == "[[0, 1, 2], [3, 4, 5]]"
    assert format_values(range(4), [2, 1, 2], "int64") == "[[[0, 1]], [[2, 3]]]"
    assert format_values([7], [1, 1], "int64") == "[[7]]"
    assert format_values([2.5], [], "float32") == "2.5"                    # 0-d: the value itself


def test_summary_line_of_small_empty_and_large_tensors():
    assert line(torch.tensor([457])) == "i64[1] [457]"                    # was μ=457 σ=nan
    assert line(torch.empty(2, 0, 32)) == "f32[2, 0, 32] empty"            # was μ=nan σ=nan
    assert line(torch.empty(0, dtype=torch.bfloat16)) == "bf16[0] empty"
    assert line(torch.tensor([[1.0, 0.5], [NAN, -INF]])) == "f32[2, 2] [[1, 0.5], [nan, -inf]]"
    assert line(torch.tensor([True, False, True])) == "bool[3] [true, false, true]"
    assert line(torch.tensor(3.25)) == "f32[] 3.25"
    assert line(torch.zeros(1, 8)) == "f32[1, 8] [[0, 0, 0, 0, 0, 0, 0, 0]]"
    assert line(torch.arange(16, dtype=torch.uint8).reshape(2, 2, 4)) == \
        "u8[2, 2, 4] [[[0, 1, 2, 3], [4, 5, 6, 7]], [[8, 9, 10, 11], [12, 13, 14, 15]]]"
    assert line(torch.tensor([0.1, 3.0], dtype=torch.bfloat16)) == "bf16[2] [0.100098, 3]"
    assert line(torch.arange(6.0).reshape(3, 2).t()) == "f32[2, 3] [[0, 2, 4], [1, 3, 5]]"  # C order
    big = line(torch.arange(17.0))
    assert big == "f32[17] μ=8 σ=5.05 min=0 max=16 ‖x‖=38.68 nan=0 inf=0"   # unchanged past 16
    # a summary without values (say, from elsewhere) keeps the statistics line
    s = summarize(torch.tensor([1.0, 2.0]))
    assert format_summary_line({**s, "values": []}).startswith("f32[2] μ=1.5 σ=0.7071 ")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                                   torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
                                   torch.bool])
def test_summary_values_are_every_element_in_c_order(dtype):
    t = (torch.arange(12) % 7 - 3).to(dtype).reshape(3, 4).t()   # non-contiguous
    s = summarize(t)
    assert s["values"] == t.reshape(-1).tolist() and len(s["values"]) == 12
    assert all(type(v) is (float if dtype.is_floating_point else int) for v in s["values"])
    assert s["numel"] == 12 and s["nan_count"] == 0                     # the statistics stay
    assert summarize(torch.zeros(MAX_VALUES + 1, dtype=dtype))["values"] == []
    assert summarize(torch.zeros(0, dtype=dtype))["values"] == []


def test_int64_values_are_exact_past_2_53():
    vals = [2 ** 63 - 1, -2 ** 63, 2 ** 53 + 1, -1, 0, -(2 ** 52) - 7]
    assert summarize(torch.tensor(vals))["values"] == vals


def test_floats_keep_their_value_nan_and_inf():
    t = torch.tensor([0.1, NAN, INF, -INF, 1e-40])
    got = summarize(t)["values"]
    assert got[0] == t[0].item() and math.isnan(got[1]) and got[2:4] == [INF, -INF]
    assert got[4] == t[4].item() != 0                                    # a float32 subnormal


def test_small_values_cost_no_extra_transfer(monkeypatch):
    copies = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: copies.append(self.numel()) or real(self))
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("item() in summarize"))
    for t in (torch.arange(16), torch.randn(3, 5), torch.tensor([True]), torch.randn(40)):
        copies.clear()
        summarize(t)
        assert len(copies) == 1, copies                                  # one device->host copy
        assert copies[0] == 7 + (2 * t.numel() if t.dtype == torch.int64 else
                                 t.numel() if t.numel() <= MAX_VALUES else 0)


def test_values_go_on_the_wire():
    msg = convert.tensor_summary({**summarize(torch.tensor([3, -2 ** 40])), "name": "x"})
    assert list(msg.values) == [3.0, float(-2 ** 40)] and msg.numel == 2
    assert list(convert.tensor_summary(summarize(torch.randn(17))).values) == []
    assert list(convert.tensor_summary(summarize(torch.tensor([True, False]))).values) == [1.0, 0.0]


# ----------------------------------------------------------------------------- the language

X = torch.tensor([[3.0, 1.0, 4.0, 1.5], [9.0, 2.0, 6.0, 5.0]])


def test_topk_as_the_whole_expression_gives_values_and_indices():
    o = evaluate_outcome("topk(x, 2)", {"x": X})
    ref = X.topk(2)
    assert o.kind == "topk" and torch.equal(o.value, ref.values)
    assert len(o.also) == 1 and torch.equal(o.also[0], ref.indices) and o.also[0].dtype == torch.int64
    o = evaluate_outcome("topk(x, k=1, dim=0)", {"x": X})
    assert torch.equal(o.value, X.topk(1, 0).values) and torch.equal(o.also[0], X.topk(1, 0).indices)
    # inside a larger expression topk is still the values
    for src in ("topk(x, 2) * 1", "(topk(x, 2))[0]", "sum(topk(x, 2))"):
        o = evaluate_outcome(src, {"x": X})
        assert o.kind == "" and o.also == (), src
    assert torch.equal(evaluate("topk(x, 2)", {"x": X}), X.topk(2).values)   # evaluate: values
    o = evaluate_outcome("topk(3, 1)", {})                                 # numbers in, numbers out
    assert o.value == 3 and o.also == (0,)


def test_argtopk_is_the_indices_with_topks_checks_and_charge():
    assert torch.equal(evaluate("argtopk(x, 3)", {"x": X}), X.topk(3).indices)
    assert torch.equal(evaluate("argtopk(x, 1, dim=0)", {"x": X}), X.topk(1, 0).indices)
    assert torch.equal(evaluate("x[1][argtopk(x[1], 2)]", {"x": X}), X[1].topk(2).values)
    for src, needle in (("argtopk(x, 5)", "argtopk: k=5 out of range for dim -1 of shape [2, 4]"),
                        ("argtopk(x, 0)", "k=0 out of range"), ("argtopk(x, 1, 2)", "dim 2 out of range"),
                        ("argtopk(x, 1.5)", "k must be an integer"), ("argtopk(x)", "missing argument 'k'")):
        with pytest.raises(ExprError) as e:
            evaluate(src, {"x": X})
        assert needle in str(e.value), (src, str(e.value))
    for f in ("topk", "argtopk"):   # the same elements charged: reads 8 + writes at most 8
        assert evaluate(f"{f}(x, 2)", {"x": X}, Limits(max_elements=16)) is not None
        with pytest.raises(ExprError, match="the limit is 15"):
            evaluate(f"{f}(x, 2)", {"x": X}, Limits(max_elements=15))
    with pytest.raises(ExprError, match="the limit is 15"):
        evaluate_outcome("topk(x, 2)", {"x": X}, Limits(max_elements=15))


def test_shape_as_the_whole_expression_is_marked():
    o = evaluate_outcome("shape(x)", {"x": X})
    assert o.kind == "shape" and torch.equal(o.value, torch.tensor([2, 4]))
    assert evaluate_outcome("shape(x)[0]", {"x": X}).kind == ""


# ----------------------------------------------------------------------------- over gRPC

def prompt(seed, n=24, vocab=512):
    r = random.Random(seed)
    return [r.randrange(3, vocab) for _ in range(n)]


def code(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


@pytest.fixture(scope="module")
def served():
    """One paused session (layers.2, prefill of 24 tokens) on a real in-process server."""
    with running_server() as (c, st):
        s = c.create(prompt(3), max_new=3, layers=(2,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        yield c, st, s.id


def ev(c, sid, src):
    return c.Evaluate(pb.EvaluateRequest(session_id=sid, expression=src))


def fetch(c, sid, name):
    chunks = list(c.GetTensor(pb.GetTensorRequest(session_id=sid, name=name)))
    first = chunks[0]
    data = b"".join(ch.data for ch in chunks)
    t = tensors.from_bytes(data, first.dtype, list(first.slice_shape))
    return first.summary, t


def short(st) -> str:
    return {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[st.engine.dtype]


def live(st, sid, name="hidden"):
    return st.scheduler.sessions[sid].memory.acts[name]


def test_evaluate_answers_small_tensors_with_values(served):
    c, st, sid = served
    r = ev(c, sid, "float(hidden[0, :5])")
    ref = live(st, sid)[0, :5].float()
    assert r.is_tensor and r.result_name.startswith("$")
    assert list(r.summary.values) == ref.tolist()
    assert r.value == "f32[5] [" + ", ".join(format_value(v) for v in ref.tolist()) + "]"
    assert "μ=" not in r.value and r.summary.numel == 5 and r.summary.std > 0   # stats stay too
    big = ev(c, sid, "hidden[0, :17]")
    assert list(big.summary.values) == [] and " μ=" in big.value
    empty = ev(c, sid, "hidden[:, 0:0]")
    assert empty.value == f"{short(st)}[24, 0] empty" and list(empty.summary.values) == []
    assert empty.result_name.startswith("$")
    ints = ev(c, sid, "tokens[:3]")
    assert ints.value == f"i64[3] {prompt(3)[:3]}" and list(ints.summary.values) == prompt(3)[:3]
    mask = ev(c, sid, "tokens[:2] == tokens[:2]")
    assert mask.value == "bool[2] [true, true]" and list(mask.summary.values) == [1.0, 1.0]
    nested = ev(c, sid, "tokens[:4] * 0 + shape(hidden)[0]")
    assert nested.value == "i64[4] [24, 24, 24, 24]"
    one = ev(c, sid, "hidden[0, :1]")      # a single value stays a number, as before
    assert not one.is_tensor and one.value == format_value(live(st, sid)[0, 0].item())


def test_list_and_get_tensor_carry_values(served):
    c, st, sid = served
    listed = {t.name: t for t in c.ListTensors(pb.SessionRef(session_id=sid)).tensors}
    assert listed["tokens"].numel == 24 and list(listed["tokens"].values) == []
    assert list(listed["hidden"].values) == []                          # 24 x 128: statistics
    assert listed["hidden"].std > 0
    summ = next(iter(c.GetTensor(pb.GetTensorRequest(session_id=sid, name="hidden", summary_only=True, slice=[
        pb.DimSlice(start=-1, stop=0), pb.DimSlice(start=0, stop=8)])))).summary
    assert list(summ.shape) == [1, 8] and list(summ.values) == live(st, sid)[-1, :8].float().tolist()


def test_shape_prints_a_list_and_stays_usable(served):
    c, st, sid = served
    r = ev(c, sid, "shape(hidden)")
    assert r.value == "[24, 128]" and r.is_tensor and r.result_name.startswith("$")
    assert r.summary.dtype == "int64" and list(r.summary.values) == [24, 128]
    assert ev(c, sid, f"{r.result_name}[1] + shape(hidden)[0]").scalar == 152
    one = ev(c, sid, "shape(tokens)")       # one element: still a stored list
    assert one.value == "[24]" and one.is_tensor and one.result_name
    scalar = ev(c, sid, "shape(sum(hidden))")
    assert scalar.value == "[]" and scalar.is_tensor


def test_topk_answers_values_then_indices(served):
    c, st, sid = served
    r = ev(c, sid, "topk(hidden[0], 3)")
    ref = live(st, sid)[0].topk(3)
    assert r.is_tensor and len(r.also) == 1
    idx = r.also[0]
    n = int(r.result_name[1:])
    assert idx.result_name == f"${n + 1}" and idx.is_tensor
    assert list(r.summary.values) == ref.values.float().tolist() and r.value.startswith(f"{short(st)}[3] [")
    assert list(idx.summary.values) == ref.indices.tolist() and idx.summary.dtype == "int64"
    assert idx.value == f"i64[3] {ref.indices.tolist()}"
    assert idx.summary.description == "indices of topk(hidden[0], 3)"
    assert r.summary.description == "topk(hidden[0], 3)"
    # both are stored: fetch them, and use them in further expressions
    _, vals = fetch(c, sid, r.result_name)
    _, ids = fetch(c, sid, idx.result_name)
    assert torch.equal(vals, ref.values) and torch.equal(ids, ref.indices) and ids.dtype == torch.int64
    assert ev(c, sid, f"all(hidden[0][{idx.result_name}] == {r.result_name})").value == "true"
    # k = 1 keeps both as results too; dim given
    k1 = ev(c, sid, "topk(hidden, 1, dim=0)")
    assert k1.value.startswith(f"{short(st)}[1, 128] μ=") and k1.also[0].summary.shape == [1, 128]
    assert ev(c, sid, "topk(hidden[0], 1)").also[0].value == f"i64[1] [{ref.indices[0].item()}]"
    # inside a larger expression: the values only, one result
    more = ev(c, sid, "topk(hidden[0], 3) * 1")
    assert len(more.also) == 0 and list(more.summary.values) == ref.values.float().tolist()
    arg = ev(c, sid, "argtopk(hidden[0], 3)")
    assert arg.value == f"i64[3] {ref.indices.tolist()}" and len(arg.also) == 0


def test_refusals_are_specific_statuses(served):
    c, st, sid = served
    for src, needle in (("topk(hidden, 129)", "topk: k=129 out of range"),
                        ("argtopk(hidden, 0)", "argtopk: k=0 out of range"),
                        ("argtopk(hidden, 2, dim=3)", "dim 3 out of range"),
                        ("topk(hidden, 'a')", "k must be an integer"),
                        ("hidden[argtopk(tokens, 2) + 100]", "index tensor 'argtopk(tokens, 2) + 100' has value")):
        got, details = code(lambda: ev(c, sid, src))
        assert got == grpc.StatusCode.INVALID_ARGUMENT, (src, got, details)
        assert needle in details, (src, details)


def test_stored_results_limit_counts_values_and_indices(served):
    c, st, sid = served
    s = st.scheduler.sessions[sid]
    held = sum(t.numel() * t.element_size() for t in s.results.values())
    # room for topk's values (128 elements), not for its int64 indices of 128 x 8 bytes too
    vals = 128 * live(st, sid).element_size()
    st.engine.expr_limits = Limits(max_result_bytes=held + vals + 1023, max_ms=120_000)
    try:
        before = (list(s.results), s.result_counter)
        got, details = code(lambda: ev(c, sid, "topk(hidden, 1, dim=0)"))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and f"this result ({vals + 1024:,} bytes)" in details
        assert (list(s.results), s.result_counter) == before              # neither was stored
        assert ev(c, sid, "topk(hidden, 1, dim=0) * 1").result_name       # the values alone fit
    finally:
        st.engine.expr_limits = None


def test_a_result_is_a_copy_not_a_view():
    """$N survives a write to its source: evaluate hidden[0, :5], fill hidden with 7, fetch $N."""
    with running_server() as (c, st):
        s = c.create(prompt(5), max_new=2, layers=(2,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        r = ev(c, s.id, "hidden[0, :5]")
        first_summary, before = fetch(c, s.id, r.result_name)
        assert list(first_summary.values) == before.float().tolist() == list(r.summary.values)
        assert not torch.all(before == 7)
        answer = c.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", has_scalar=True, scalar=7.0))
        assert answer.max == answer.min == 7 and list(answer.values) == []   # 24 x 128: statistics
        assert ev(c, s.id, "all(hidden == 7)").value == "true"
        again_summary, after = fetch(c, s.id, r.result_name)
        assert torch.equal(after, before) and list(again_summary.values) == list(r.summary.values)
        assert ev(c, s.id, f"{r.result_name}[0] == 7").value == "false"
        # the stored copy shares no memory with the (CPU) session tensor it came from
        stored, src = st.scheduler.sessions[s.id].results[r.result_name], live(st, s.id)
        assert stored.untyped_storage().data_ptr() != src.untyped_storage().data_ptr()
        assert stored.untyped_storage().nbytes() == 5 * stored.element_size()
        # at a decode stop tokens has one element: listed with its value (it was μ=457 σ=nan)
        c.Continue(pb.SessionRef(session_id=s.id))
        stop = c.wait(pb.EVENT_KIND_STOPPED, s.id)
        assert stop.session.position.phase == pb.PHASE_DECODE
        token = list(stop.session.generated_tokens)[-1]
        listed = {t.name: t for t in c.ListTensors(pb.SessionRef(session_id=s.id)).tensors}
        assert list(listed["tokens"].values) == [token] and listed["tokens"].numel == 1
        assert format_summary_line(_summary_dict(listed["tokens"])) == f"i64[1] [{token}]"
        summ, _ = fetch(c, s.id, "tokens")
        assert list(summ.values) == [token]


def _summary_dict(m: pb.TensorSummary) -> dict:
    return dict(dtype=m.dtype, shape=list(m.shape), numel=m.numel, values=list(m.values))
