"""Grammar-aware fuzzing of the expression language (hypothesis).

evaluate() must return a value or raise ExprError, never anything else, and never run long;
tensor_ops.evaluate_expression on a real tiny-model session must return or raise a DjinnError
with a client-facing code. Derandomized, so CI runs the same inputs every time.
"""
import math
import string
from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from djinn.inspect.expr import _FUNCS, INT_MAX, INT_MIN, ExprError, Lazy, Limits, evaluate
from djinn.runtime import tensor_ops
from djinn.runtime.errors import DjinnError

from test_expr_device import make_engine, paused_session

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # std of one value and the like
COUNT = {"evaluate": 0, "junk": 0, "session": 0}
OUTCOME = {"value": 0, "error": 0, "ok": 0, "djinn": 0}
LIMITS = Limits(max_elements=1 << 24, max_ms=1000.0)   # small tensors: anything slower is a hang

g = torch.Generator().manual_seed(0)
ENV = {
    "x": torch.randn(4, 8, generator=g), "y": torch.randn(2, 3, 5, generator=g),
    "b": torch.randn(4, 8, generator=g).bfloat16(), "h": torch.randn(3, 8, generator=g).half(),
    "i": torch.tensor([0, 3, -1, 7, -4, 2], dtype=torch.int64),
    "big": torch.tensor([INT_MAX, INT_MIN, 0], dtype=torch.int64),
    "m": torch.rand(4, 8, generator=g) > 0.5, "mm": torch.tensor([True, False, True, True]),
    "w": torch.arange(5, dtype=torch.int32), "u": torch.tensor([1, 0, 3], dtype=torch.uint8),
    "z": torch.tensor(2.5), "e": torch.zeros(0, 8), "nan": torch.tensor([math.nan, math.inf, 1.0]),
    "$1": torch.randn(4, 8, generator=g), "n": 3, "f": 0.5, "t": True, "phase": "decode",
    "lazy": Lazy(lambda: ENV["x"] * 2, elements=64),
}
NAMES = sorted(ENV) + ["nope", "$2", "None", "inf"]
FUNCS = sorted(_FUNCS) + ["eval", "randn_like", "getattr"]
OPS = ["+", "-", "*", "/", "**", "@", "<", "<=", ">", ">=", "==", "!=", "and", "or"]
KWARGS = ["dim", "k", "x", "lo", "hi", "a", "b", "foo"]

small = st.integers(-10, 10)
ints = st.one_of(small, small, small, st.integers(INT_MIN + 1, INT_MAX),   # INT_MIN: only as -x
                 st.sampled_from([INT_MAX, 2 ** 63, 2 ** 64, 10 ** 30, 2 ** 31, 1 << 20, 2 ** 2048]))
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                   st.sampled_from(["1e999", "1e-999", ".5", "0.", "5e-324", "1.7976931348623157e308",
                                    "1e+16", "0.0", "3.", "1e3"]))
numbers = st.one_of(ints.map(str), floats, st.sampled_from(["2 ** 2048", "2 ** 63", "(-8) ** 0.5",
                                                            "9223372036854775807 + 1", "-2 ** 63"]))
strings = st.text(string.printable, max_size=6).map(repr)
# names and small integers dominate, so that most expressions get past their leaves
leaves = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(NAMES),
                   small.map(str), small.map(str), numbers, strings,
                   st.sampled_from(["true", "false", "True", "False"]))


def slice_part(children):
    opt = st.one_of(st.just(""), children, ints.map(str))
    return st.one_of(st.tuples(opt, opt).map(":".join),
                     st.tuples(opt, opt, opt).map(":".join))


TENSORS = [k for k, v in ENV.items() if isinstance(v, (torch.Tensor, Lazy))]


def extend(children):
    item = st.one_of(children, slice_part(children), st.just("..."), ints.map(str), st.sampled_from(TENSORS))
    arg = st.one_of(children, st.tuples(st.sampled_from(KWARGS), children).map("=".join))
    return st.one_of(
        st.tuples(children, st.sampled_from(OPS), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(OPS), children).map(" ".join),   # precedence
        st.tuples(st.sampled_from(["-", "+", "not ", "- -"]), children).map("".join),
        st.tuples(st.sampled_from(FUNCS), st.lists(arg, max_size=4)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(st.one_of(st.sampled_from(TENSORS), children), st.lists(item, min_size=1, max_size=4)).map(
            lambda t: f"{t[0]}[{', '.join(t[1])}]"),
        children.map(lambda c: f"({c})"),
    )


exprs = st.recursive(leaves, extend, max_leaves=10)
junk = st.one_of(st.text(string.printable, max_size=40),
                 st.lists(st.sampled_from(NAMES + OPS + FUNCS + list("[](),:.=$'\"") + ["..."]),
                          max_size=12).map(" ".join),
                 st.lists(st.sampled_from(NAMES + OPS + list("[](),:") + ["1", "-1", "2 ** 99"]),
                          max_size=16).map("".join))
FUZZ = settings(max_examples=4000, deadline=timedelta(seconds=5), derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def check(src, env=ENV):
    try:
        v = evaluate(src, env, LIMITS)
    except ExprError as e:
        assert isinstance(e.msg, str) and (e.col is None or 1 <= e.col <= len(src) + 1), (src, e)
        OUTCOME["error"] += 1
        return
    OUTCOME["value"] += 1
    assert isinstance(v, (torch.Tensor, bool, int, float, str)), (src, type(v))
    if isinstance(v, int):
        assert INT_MIN <= v <= INT_MAX and float(v) == float(v), src   # no bignums, float() works


@FUZZ
@given(exprs)
def test_grammar_fuzz(src):
    COUNT["evaluate"] += 1
    check(src)


@FUZZ
@given(st.one_of(junk, st.tuples(st.sampled_from(["x[", "mean(", "(", "i["]), junk).map("".join),
                st.tuples(leaves, junk).map("".join)))
def test_junk_fuzz(src):
    COUNT["junk"] += 1
    check(src)


@pytest.fixture(scope="module")
def session():
    engine = make_engine("cpu")
    return engine, paused_session(engine)


SESSION_NAMES = ["hidden", "attn_out", "q", "k", "v", "k_cache", "v_cache", "logits", "tokens", "token",
                 "pos", "layer", "session", "phase", "point", "ntokens", "generated", "$1", "$9"]
session_exprs = st.recursive(st.one_of(st.sampled_from(SESSION_NAMES), numbers), extend, max_leaves=8)
CODES = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND", "OUT_OF_RANGE", "FAILED_PRECONDITION"}


@settings(max_examples=1200, deadline=timedelta(seconds=5), derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(session_exprs)
def test_session_fuzz(session, src):
    engine, s = session
    COUNT["session"] += 1
    if len(s.results) > 20:
        s.results.clear()   # as a resume does
    try:
        out = tensor_ops.evaluate_expression(engine, s, src)
    except DjinnError as e:
        assert e.code in CODES, (src, e.code, str(e))
        OUTCOME["djinn"] += 1
        return
    OUTCOME["ok"] += 1
    assert "value" in out and out["compute_ms"] >= 0
    if out.get("is_tensor"):
        r = s.results[out["result_name"]]
        assert r.device.type == "cpu" and r.is_contiguous()


def test_zz_fuzz_counts(capsys):
    """Reports how many inputs the fuzz tests above tried (shown even with output captured)."""
    total = COUNT["evaluate"] + COUNT["junk"]
    line = (f"expression fuzz: {COUNT['evaluate']} grammar + {COUNT['junk']} junk = {total} inputs "
            f"through evaluate() ({OUTCOME['value']} values, {OUTCOME['error']} ExprErrors), "
            f"{COUNT['session']} through evaluate_expression on a tiny-model session "
            f"({OUTCOME['ok']} answers, {OUTCOME['djinn']} DjinnErrors)")
    with capsys.disabled():
        print("\n" + line)
    if COUNT["session"] and COUNT["evaluate"]:   # the whole module ran, not a -k selection
        assert total >= 8000 and COUNT["session"] >= 1000, line
