import math

import pytest
import torch

from djinn.inspect import expr
from djinn.inspect.expr import ExprError, ExprLimit, Lazy, Limits, evaluate, names_used, parse

X = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
# The language, not the clock: a loaded 2-core CI machine (or a kernel's first use) can take
# longer than the default 2 s; the time limit has its own tests below.
ROOMY = Limits(max_ms=120_000)


def ev(src, **env):
    return evaluate(src, {"x": X, **env}, ROOMY)


def err(src, **env) -> str:
    with pytest.raises(ExprError) as e:
        ev(src, **env)
    return str(e.value)


# ----------------------------------------------------------------------------- arithmetic

@pytest.mark.parametrize("src,want", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ** 3 ** 2", 512), ("-2 ** 2", -4),
    ("2 ** -1", 0.5), ("7 / 2", 3.5), ("1e-3 * 2", 0.002), (".5 + 1.", 1.5),
    ("1 - 2 - 3", -4), ("true", True), ("False", False), ("not 1 > 2", True),
    ("1 < 2 and 3 >= 3", True), ("0 or 2 > 1", True), ("'a' == \"a\"", True),
    ("'a' != 'b'", True), ("'a' < 'b'", True), ("'a' == 1", False),
])
def test_scalars(src, want):
    got = ev(src)
    assert got == want and type(got) is type(want)


def test_tensor_arithmetic():
    y = torch.randn(4, 5)
    assert torch.equal(ev("x * 2 + 1"), X * 2 + 1)
    assert torch.equal(ev("-x ** 2 / 3"), -X ** 2 / 3)
    assert torch.equal(ev("1 - x"), 1 - X)
    assert torch.allclose(ev("x @ y", y=y), X @ y)
    assert torch.equal(ev("x[0] @ x[0, 0]"), X[0] @ X[0, 0])
    assert torch.equal(ev("x > 11"), X > 11)
    assert torch.equal(ev("x == x"), torch.ones_like(X, dtype=torch.bool))


def test_logic_on_tensors_is_elementwise():
    assert torch.equal(ev("(x > 3) and (x < 6)"), (X > 3) & (X < 6))
    assert torch.equal(ev("x < 3 or x > 20"), (X < 3) | (X > 20))
    assert torch.equal(ev("not x > 3"), ~(X > 3))
    assert torch.equal(ev("true and x > 3"), X > 3)  # scalar left: the right side as booleans
    assert ev("false and x > 3") is False


# ----------------------------------------------------------------------------- indexing

@pytest.mark.parametrize("src,index", [
    ("x[0, -1, :10]", (0, -1, slice(None, 10))), ("x[..., 3]", (..., 3)),
    ("x[:, ::2]", (slice(None), slice(None, None, 2))), ("x[-1]", (-1,)),
    ("x[1:, 1:3, -2:]", (slice(1, None), slice(1, 3), slice(-2, None))),
    ("x[0, ..., 1:2]", (0, ..., slice(1, 2))), ("x[:]", (slice(None),)),
    ("x[0][1][2]", (0, 1, 2)), ("x[1, 2 - 1]", (1, 1)), ("x[:, 1:100]", (slice(None), slice(1, 100))),
])
def test_slicing_matches_torch(src, index):
    assert torch.equal(ev(src), X[index])


def test_tensor_indices():
    assert torch.equal(ev("x[x > 20]"), X[X > 20])
    assert torch.equal(ev("x[0, :, argmax(x[0, 0])]"), X[0, :, 3])
    assert "index 3 out of range for dim 1 with size 3" in err("x[0, argmax(x[0, 0])]")
    assert torch.equal(ev("x[:, :argmax(x[0, 0])]"), X[:, :3])
    assert torch.equal(ev("x[0, $1]", **{"$1": torch.tensor([2, 0])}), X[0, [2, 0]])


@pytest.mark.parametrize("src,needle", [
    ("x[2]", "index 2 out of range for dim 0 with size 2"),
    ("x[0, -4]", "index -4 out of range for dim 1 with size 3"),
    ("x[..., 4]", "index 4 out of range for dim 2 with size 4"),
    ("x[0, 0, 0, 0]", "too many indices: tensor has 3 dims, got 4"),
    ("x[..., ...]", "only one '...'"), ("x[::-1]", "step must be >= 1"), ("x[::0]", "step"),
    ("x[1.5]", "an index must be an integer"), ("x['a']", "an index must be"),
    ("3[0]", "only tensors can be indexed"), ("x[0:1.5]", "slice bounds must be integers"),
])
def test_index_errors(src, needle):
    assert needle in err(src)


# ----------------------------------------------------------------------------- functions

def test_reductions():
    assert torch.allclose(ev("mean(x)"), X.mean())
    assert torch.allclose(ev("std(x)"), X.std()) and torch.allclose(ev("var(x)"), X.var())
    assert torch.equal(ev("sum(x, dim=1)"), X.sum(1))
    assert torch.equal(ev("sum(x, 1)"), X.sum(1))
    assert torch.equal(ev("max(x, dim=-1)"), X.amax(-1)) and ev("min(x)").item() == 0
    assert torch.allclose(ev("norm(x)"), torch.linalg.vector_norm(X))
    assert torch.allclose(ev("norm(x, dim=-1)"), X.norm(dim=-1))
    assert torch.equal(ev("argmax(x)"), X.argmax()) and torch.equal(ev("argmin(x, 2)"), X.argmin(2))
    assert torch.allclose(ev("softmax(x)"), X.softmax(-1))
    assert torch.allclose(ev("log_softmax(x, dim=0)"), X.log_softmax(0))
    assert torch.equal(ev("topk(x[0, 0], 2)"), torch.tensor([3.0, 2.0]))
    assert torch.equal(ev("topk(x, k=1, dim=0)"), X.topk(1, 0).values)
    assert torch.equal(ev("argtopk(x[0, 0], 2)"), torch.tensor([3, 2]))
    assert torch.equal(ev("argtopk(x, k=1, dim=0)"), X.topk(1, 0).indices)
    assert torch.equal(ev("shape(x)"), torch.tensor([2, 3, 4])) and ev("numel(x)") == 24
    assert torch.equal(ev("clamp(x, 2, 5)"), X.clamp(2, 5))
    assert torch.equal(ev("clamp(x, x[0], 5.0)"), X.clamp(X[0], torch.tensor(5.0)))
    assert torch.allclose(ev("cos_sim(x, x + 1)"), torch.cosine_similarity(X, X + 1, dim=-1))
    assert torch.equal(ev("zeros_like(x) + ones_like(x)"), torch.ones_like(X))
    assert ev("any(x > 22)").item() and not ev("all(x > 0)").item()
    assert torch.equal(ev("abs(-x)"), X) and torch.allclose(ev("sqrt(exp(log(x + 1)))"), (X + 1).sqrt())


def test_nan_inf_helpers():
    y = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), float("nan")])
    assert ev("count_nan(y)", y=y).item() == 2 and ev("count_inf(y)", y=y).item() == 2
    assert torch.equal(ev("isnan(y) or isinf(y)", y=y), ~torch.isfinite(y))


def test_scalar_arguments_give_numbers():
    assert ev("sqrt(4)") == 2.0 and ev("abs(-3)") == 3 and ev("float(3)") == 3.0
    assert ev("isnan(1.0)") is False and ev("numel(5)") == 1


def test_low_precision_reductions_use_float32():
    h = torch.full((4096,), 1.001, dtype=torch.bfloat16)
    for f in ("mean", "std", "var", "sum", "norm", "softmax"):
        assert ev(f"{f}(h)", h=h).dtype == torch.float32, f
    assert math.isclose(ev("sum(h)", h=h).item(), 4096 * h[0].float().item(), rel_tol=1e-6)
    assert ev("max(h)", h=h).dtype == torch.bfloat16  # exact, so native
    assert ev("mean(i)", i=torch.arange(4)).item() == 1.5  # integers need a float mean
    assert ev("float(h)", h=h).dtype == torch.float32


@pytest.mark.parametrize("src,needle", [
    ("mean(x, dim='a')", "dim must be an integer"), ("mean(x, foo=1)", "unexpected argument 'foo'"),
    ("mean()", "missing argument 'x'"), ("mean(x, 1, 2)", "too many arguments"),
    ("mean(x, dim=1, dim=2)", "repeated argument 'dim'"), ("mean(dim=1, x)", "positional argument"),
    ("topk(x, 9)", "k=9 out of range"), ("argtopk(x, 9)", "argtopk: k=9 out of range"), ("mean('a')", "got a string"),
    ("clamp(x, 1)", "missing argument 'hi'"), ("x @ x", "'@' failed"), ("1 @ 2", "two tensors"),
    ("randn_like(x)", "unknown function 'randn_like'"),
])
def test_call_errors(src, needle):
    assert needle in err(src)


# ----------------------------------------------------------------------------- names

def test_lazy_callables_called_only_when_used_and_once():
    calls = []

    def load(name, value):
        return lambda: calls.append(name) or value
    env = {"a": load("a", torch.ones(3)), "b": load("b", torch.zeros(3)), "phase": "decode"}
    assert torch.equal(evaluate("a + a * sum(a)", env), torch.full((3,), 4.0))
    assert calls == ["a"]
    assert evaluate("phase == 'prefill' and max(b) > 0", env) is False
    assert calls == ["a"]  # b is never loaded: a scalar left side short-circuits
    assert evaluate("phase == 'decode' and max(b) > 0", env).item() is False
    evaluate("a", env)
    assert calls == ["a", "b", "a"]  # a fresh cache per evaluate


def test_phase_and_strings():
    env = {"phase": "decode", "step": 3, "x": X}
    assert evaluate('phase == "decode"', env) is True
    assert evaluate("phase != 'decode' or step > 2", env) is True
    assert evaluate("phase == 'decode' and count_nan(x) == 0", env).item() is True
    assert "cannot combine a tensor with a string" in str(pytest.raises(
        ExprError, evaluate, "x == 'a'", env).value)
    assert "does not apply to a string" in err("phase + 1", phase="decode")
    assert "do not apply to a string" in err("-phase", phase="decode")
    assert evaluate(r"'it\'s' == " + '"it\'s"', {}) is True


def test_unknown_name_lists_available():
    msg = err("foo + 1", y=1)
    assert "unknown name 'foo'" in msg and "available: x, y" in msg and "column 1" in msg


def test_dollar_names_and_names_used():
    assert torch.equal(evaluate("$12 * 2", {"$12": X}), X * 2)
    assert names_used("mean(x) + y[0, z:] and $2 > 0 and phase == 'a'") == {"x", "y", "z", "$2", "phase"}
    assert names_used("1 + 2") == set()


def test_unsupported_env_value():
    assert "unsupported type" in err("o", o=object())


# ----------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("src,needle", [
    ("__import__('os')", "'__' are not allowed"),
    ("x.__class__", "'__' are not allowed"),
    ("().__class__", "'__' are not allowed"),
    ("x.shape", "attribute access is not allowed"),
    ("x[0].T", "attribute access is not allowed"),
    ("lambda: 1", "'lambda' is not allowed"),
    ("[i for i in x]", "'for' is not allowed"),
    ("[1, 2]", "list literals"),
    ("x = 1", "assignment is not allowed"),
    ("(y := 1)", "':' is only allowed inside [...] slices"),
    ("eval(1)", "unknown function 'eval'; allowed: abs, all, any"),
    ("open('f')", "unknown function 'open'"),
    ("exec('1')", "unknown function 'exec'"),
    ("getattr(x, 'shape')", "unknown function 'getattr'"),
    ("x(1)", "unknown function 'x'"),
    ("(x)(1)", "only whitelisted functions can be called"),
    ("x[0](1)", "only whitelisted functions can be called"),
    ("()", "empty parentheses"), ("(1, 2)", "tuples are not allowed"),
    ("1 if x else 2", "'if' is not allowed"), ("import os", "'import' is not allowed"),
    ("x; 1", "unexpected character ';'"), ("{}", "unexpected character '{'"),
    ("x & 1", "unexpected character '&'"), ("'abc", "unterminated string"),
    ("$", "'$' must be followed by digits"), ("1x", "invalid number"),
    ("", "empty expression"), ("   ", "empty expression"), ("1 +", "end of expression"),
    ("1 2", "after a complete expression"), ("(1", "expected ')'"),
    ("1 < 2 < 3", "chained comparisons"), ("1 == not 2", "'not' must be parenthesized"),
    ("x[1:2:3:4]", "':' is only allowed inside"), ("x 1", "after a complete expression"),
    ("mean(x, dim=1 ** )", "unexpected"), ("None", "unknown name 'None'"),
    ("ñ", "unexpected character"),
])
def test_hostile_inputs(src, needle):
    msg = err(src)
    assert needle in msg, msg


def test_error_column():
    with pytest.raises(ExprError) as e:
        ev("1 + x.shape")
    assert e.value.col == 6 and e.value.msg.startswith("attribute access")


def test_size_limits():
    assert "too long" in err("1" * 2001)
    assert "nested too deeply" in err("(" * 65 + "1" + ")" * 65)
    assert ev("(" * 60 + "1" + ")" * 60) == 1
    assert "nested too deeply" in err("-" * 1000 + "1")
    assert "nested too deeply" in err("mean(" * 70 + "x" + ")" * 70)
    assert "too complex" in err("+".join(["1"] * 600))
    assert ev("+".join(["1"] * 200)) == 200


def test_huge_results_are_refused(monkeypatch):
    monkeypatch.setattr(expr, "MAX_ELEMENTS", 1000)
    a, b = torch.zeros(100, 1), torch.zeros(1, 100)
    assert "would create 10,000 elements" in err("a * b", a=a, b=b)
    assert "would create" in err("a @ b", a=a, b=b)
    assert "would create" in err("a < b", a=a, b=b)
    assert "would create" in err("(a > 0) and (b > 0)", a=a, b=b)
    assert "would create" in err("cos_sim(a, b, dim=0)", a=torch.zeros(100, 1, 2),
                                 b=torch.zeros(1, 100, 2))
    assert "would create" in err("a[0, i]", a=a, i=torch.zeros(2000, dtype=torch.long))
    assert ev("a @ b[:, :5]", a=a, b=b).shape == (100, 5)


def test_numeric_errors_are_expr_errors():
    assert "division by zero" in err("1 / 0")
    assert "overflow" in err("10 ** 10 ** 10")
    assert "overflow" in err("((9999999999 ** 64) ** 64) ** 64")  # no giant bignums
    assert ev("2 ** 62") == 4611686018427387904
    assert torch.isinf(ev("x[0, 0, 1] / 0"))  # tensors follow IEEE


# ----------------------------------------------------------------------------- integers

@pytest.mark.parametrize("src,needle", [
    ("2 ** 2048", "integer overflow: 2 ** 2048 does not fit in 64 bits"),
    ("2 ** 63", "integer overflow: 2 ** 63"), ("(-2) ** 65", "integer overflow"),
    ("3037000500 * 3037000500", "integer overflow: 3037000500 * 3037000500"),
    ("9223372036854775807 + 1", "integer overflow"), ("-9223372036854775807 - 2", "integer overflow"),
    ("-(-9223372036854775807 - 1)", "integer overflow"),
    ("9223372036854775808", "integer literal 9223372036854775808 is too large"),
    ("1" * 400, "integer literal 111111111111111111111111... is too large"),
    ("2.0 ** 2048", "'**' failed: numeric overflow"), ("10 ** 400.0", "numeric overflow"),
    ("(-8) ** 0.5", "complex number"), ("0 ** -1", "'**' failed"),
])
def test_integer_rules(src, needle):
    msg = err(src)
    assert needle in msg, msg


def test_integers_within_64_bits_and_floats_as_python():
    assert ev("2 ** 62 + (2 ** 62 - 1)") == (1 << 63) - 1 and "2 ** 63" in err("-2 ** 63")
    assert ev("(-2) ** 63") == -(1 << 63) and ev("1 ** 100000") == 1 and ev("(-1) ** 99999") == -1
    assert ev("9223372036854775807") == (1 << 63) - 1 and ev("2 ** -2048") == 0.0
    assert ev("1e999") == math.inf and ev("1e308 * 10") == math.inf  # floats as Python
    assert ev("9223372036854775807 / 2") == 4.611686018427388e18
    assert torch.equal(ev("x * 9223372036854775807"), X * 9223372036854775807)
    assert "overflow" in err("o + 1", o=1 << 70)   # ints from the env follow the same rule


# ----------------------------------------------------------------------------- index bounds

I = torch.tensor([0, 2, -1])


@pytest.mark.parametrize("src,needle", [
    ("x[i * 5]", "index tensor 'i * 5' has value -5 out of range for dim 0 with size 2 "
                 "(valid -2..1) (column 3)"),
    ("x[i * 5 + 5]", "index tensor 'i * 5 + 5' has value 15 out of range for dim 0"),
    ("x[0, i - 3]", "index tensor 'i - 3' has value -4 out of range for dim 1 with size 3"),
    ("x[0, 1, i * 3]", "has value 6 out of range for dim 2 with size 4"),
    ("x[..., i + 2]", "has value 4 out of range for dim 2 with size 4"),
    ("x[i[:2], i]", "index tensor 'i[:2]' has value 2 out of range for dim 0 with size 2"),
    ("x[0:1, i, i + 3]", "index tensor 'i + 3' has value 5 out of range for dim 2"),
    ("x[x[:, 0, 0] > 0, i + 9]", "'i + 9' has value 11 out of range for dim 1 with size 3"),
    ("x[0, i[:0] + 5, 9]", "index 9 out of range for dim 2 with size 4"),
    ("e[i]", "has value -1 out of range for dim 0 with size 0 (the dim is empty)"),
    ("x[m]", "boolean mask 'm' has shape [3, 3] but the dims it covers (0..1) have shape [2, 3]"),
    ("x[0, m]", "boolean mask 'm' has shape [3, 3] but the dims it covers (1..2) have shape [3, 4]"),
    ("x[m[0]]", "boolean mask 'm[0]' has shape [3] but the dims it covers (0..0) have shape [2]"),
    ("x[0, i, i[:2]]", "index tensors of shapes [3], [2] cannot be broadcast together"),
])
def test_index_tensor_bounds(src, needle):
    msg = err(src, i=I, m=torch.ones(3, 3, dtype=torch.bool), e=torch.zeros(0, 3))
    assert needle in msg, msg


def test_index_tensors_in_range_match_torch():
    assert torch.equal(ev("x[0, i]", i=I), X[0, I])
    assert torch.equal(ev("x[i[:2] - 2, i[:2], i[:2]]", i=I), X[I[:2] - 2, I[:2], I[:2]])  # negative
    assert torch.equal(ev("x[x[:, 0, 0] >= 0, i[:2]]", i=I), X[X[:, 0, 0] >= 0, I[:2]])
    assert torch.equal(ev("x[..., i[:1]]", i=I), X[..., I[:1]])
    assert ev("x[i[:0]]", i=I).shape == (0, 3, 4)
    u = torch.tensor([1, 0], dtype=torch.uint8)     # integers, not a mask (torch's old reading)
    assert torch.equal(ev("x[u]", u=u), X[[1, 0]])
    assert torch.equal(ev("x[:99, -99:, ::99]"), X[:, :, :1])  # slices clamp, without warnings


def test_index_bounds_use_one_reduction_on_the_index_device(monkeypatch):
    calls = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: calls.append(t.shape) or real(t))
    assert "out of range" in err("x[0, i * 9]", i=I)
    assert calls == [torch.Size([2])]  # min and max, copied back together


# ----------------------------------------------------------------------------- limits

def test_elements_limit_counts_reads_and_writes():
    lim = Limits(max_elements=100)
    assert evaluate("x * 2", {"x": X}, lim).shape == X.shape            # 24 + 24
    with pytest.raises(ExprLimit) as e:
        evaluate("x * 2 + x", {"x": X}, lim)                            # + 24 + 24 + 24
    assert e.value.limit == "elements" and e.value.value == 100 and e.value.col == 7
    assert "'+' would bring this expression's work to 120 elements; the limit is 100" in str(e.value)
    assert isinstance(e.value, ExprError)
    a, b = torch.zeros(10, 30), torch.zeros(30, 10)
    with pytest.raises(ExprLimit, match="'@'"):                          # 3000 multiply-adds
        evaluate("a @ b", {"a": a, "b": b}, Limits(max_elements=2000))
    assert evaluate("shape(x)[0] + numel(x)", {"x": X}, Limits(max_elements=3)) == 26  # metadata


def test_elements_limit_refuses_before_the_work_runs():
    loaded = []
    env = {"big": Lazy(lambda: loaded.append(1) or X, elements=1000), "x": X}
    with pytest.raises(ExprLimit, match="loading 'big'"):
        evaluate("x + big", env, Limits(max_elements=999))
    assert loaded == []
    assert evaluate("sum(big)", env, Limits(max_elements=1100)).item() == X.sum()


def test_time_limit():
    import time
    slow = lambda: time.sleep(0.02) or X  # noqa: E731
    with pytest.raises(ExprLimit) as e:
        evaluate("slow + 1", {"slow": slow}, Limits(max_ms=5))
    assert e.value.limit == "time" and "time limit of 5 ms" in str(e.value)
    assert evaluate("slow + 1", {"slow": slow}, Limits(max_ms=5000)).shape == X.shape
    assert evaluate("1 + 1", {}) == 2     # the default limits


def test_parse_returns_tree():
    tree = parse("mean(x[0], dim=-1) > 2")
    assert tree.kind == "cmp" and tree.args[0] == ">"
    assert tree.args[1].kind == "call" and tree.args[1].args[0] == "mean"
