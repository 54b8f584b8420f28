"""A small, safe expression language over paused tensors (grammar: docs/expressions.md).

Hand-written tokenizer + recursive-descent parser -> Node tree -> evaluation with torch ops.
No eval/exec/compile and no getattr on user text: every operator and function is an explicit
table entry, so anything outside the grammar is an ExprError, never Python behaviour.
Every index is checked against its dim before it reaches a kernel (on CUDA an out-of-range
gather is a device-side assert that poisons the context of every session), and the work of one
expression is bounded by Limits (elements touched, wall time).
"""
from __future__ import annotations

import operator
import re
import threading
import time
from dataclasses import dataclass, field, replace
from math import prod
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from ..runtime.faults import is_device_fault  # noqa: F401 - a CUDA error must reach the server as itself

MAX_LEN = 2000          # characters of source
MAX_NEST = 64           # parentheses, brackets, call arguments and prefix operators
MAX_TREE = 256          # node depth: keeps evaluation recursion far below Python's limit
MAX_ELEMENTS = 1 << 28  # 256M elements for any tensor an operator would create
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1  # plain integers are 64-bit, like tensors'


@dataclass
class Limits:
    """Work one expression may do: elements read and written, summed over every operation
    (a matmul counts its multiply-adds), and wall time, checked before each node starts."""
    max_elements: int = 1 << 30
    max_ms: float = 2000.0
    max_result_bytes: int = 256 << 20  # a session's stored $N results, all together (host memory)


class ExprError(ValueError):
    def __init__(self, msg: str, col: int | None = None):
        super().__init__(msg if col is None else f"{msg} (column {col})")
        self.msg, self.col = msg, col

    def at(self, col: int):
        """Adds the column in place, so subclasses (ExprLimit) keep their type and fields."""
        self.col, self.args = col, (f"{self.msg} (column {col})",)
        return self


class ExprLimit(ExprError):
    """A Limits bound was reached: `limit` is 'elements', 'time' or 'memory', `value` its bound."""
    def __init__(self, msg: str, limit: str, value, col: int | None = None):
        super().__init__(msg, col)
        self.limit, self.value = limit, value


@dataclass(frozen=True)
class Lazy:
    """An env value loaded only when the expression uses it; `elements` (the work of loading,
    e.g. the logit lens' projection) is charged to the budget before it is loaded."""
    load: Callable[[], object]
    elements: int = 0

    def __call__(self):
        return self.load()


# ------------------------------------------------------------------------------ tokenizer

_KEYWORDS = {"and", "or", "not", "true", "false", "True", "False"}
# Python words that only make sense in statements, lambdas, comprehensions or conditionals.
_FORBIDDEN = {"lambda", "for", "in", "if", "else", "is", "import", "from", "def", "class",
              "return", "yield", "await", "async", "with", "del", "global", "nonlocal",
              "assert", "while", "try", "except", "finally", "raise", "pass"}
_TOKEN = re.compile(r"(?P<ws>\s+)|(?P<num>(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*|\$\d+)"
                    r"|(?P<op>\.\.\.|\*\*|<=|>=|==|!=|[-+*/@<>()\[\],:=.])")


@dataclass(frozen=True)
class Tok:
    kind: str   # num | str | name | kw | op | eof
    val: object
    col: int    # 1-based


def tokenize(src: str) -> list[Tok]:
    toks, i = [], 0
    while i < len(src):
        c, col = src[i], i + 1
        if c in "'\"":  # strings: backslash escapes the next character
            out, j = [], i + 1
            while j < len(src) and src[j] != c:
                j += src[j] == "\\"
                out.append({"n": "\n", "t": "\t"}.get(src[j], src[j]) if j < len(src) else "")
                j += 1
            if j >= len(src):
                raise ExprError("unterminated string", col)
            toks.append(Tok("str", "".join(out), col))
            i = j + 1
            continue
        m = _TOKEN.match(src, i)
        if m is None:
            raise ExprError("'$' must be followed by digits, like $1" if c == "$"
                            else f"unexpected character {c!r}", col)
        text, kind, i = m.group(), m.lastgroup, m.end()
        if kind == "num":
            if i < len(src) and (src[i].isalnum() or src[i] in "_$"):
                raise ExprError(f"invalid number '{text}{src[i]}'", col)
            if any(ch in text for ch in ".eE"):
                toks.append(Tok("num", float(text), col))  # past float range: inf, as Python
                continue
            if len(text) > 19 or int(text) > INT_MAX:
                raise ExprError(f"integer literal {text[:24]}{'...' if len(text) > 24 else ''} "
                                "is too large: integers are 64-bit (at most 9223372036854775807); "
                                "write a float such as 1e30", col)
            toks.append(Tok("num", int(text), col))
        elif kind == "name":
            if "__" in text:
                raise ExprError(f"names containing '__' are not allowed: '{text}'", col)
            if text in _FORBIDDEN:
                raise ExprError(f"'{text}' is not allowed: only expressions over tensors, "
                                "operators and whitelisted functions are supported", col)
            toks.append(Tok("kw" if text in _KEYWORDS else "name", text, col))
        elif kind == "op":
            toks.append(Tok("op", text, col))
    toks.append(Tok("eof", None, len(src) + 1))
    return toks


# ------------------------------------------------------------------------------ parser

@dataclass(frozen=True)
class Node:
    kind: str    # num str name neg pos not bin cmp and or index slice ellipsis call kwarg
    col: int
    args: tuple  # operator names, values, child Nodes, or tuples of child Nodes
    depth: int = 1
    text: str = field(default="", compare=False)  # an index item's source and first column,
    start: int = field(default=0, compare=False)  # for messages about the index as a whole


def _children(args: tuple) -> Iterator[Node]:
    for a in args:
        if isinstance(a, Node):
            yield a
        elif isinstance(a, tuple):
            yield from a


def _node(kind: str, col: int, *args) -> Node:
    depth = 1 + max((k.depth for k in _children(args)), default=0)
    if depth > MAX_TREE:
        raise ExprError(f"expression is too complex (more than {MAX_TREE} levels)", col)
    return Node(kind, col, args, depth)


# Binary precedence, higher binds tighter. Prefix `not` sits between `and` and comparisons;
# prefix -/+ bind tighter than * but looser than ** (so -x**2 == -(x**2), as in Python).
_BIN = {"or": 1, "and": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4,
        "+": 5, "-": 5, "*": 6, "/": 6, "@": 6, "**": 8}
_NOT, _CMP_PREC, _UNARY = 3, 4, 7
_HINTS = {"=": "assignment is not allowed (use '==' to compare)",
          "[": "list literals and comprehensions are not allowed",
          ".": "attribute access is not allowed; use functions such as shape(x) or numel(x)",
          ":": "':' is only allowed inside [...] slices"}


class _Parser:
    def __init__(self, src: str):
        self.src, self.toks, self.i, self.nest = src, tokenize(src), 0, 0

    def peek(self, k: int = 0) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def at(self, val) -> bool:
        return self.peek().kind in ("op", "kw") and self.peek().val == val

    def take(self, val) -> bool:
        self.i += (ok := self.at(val))
        return ok

    def expect(self, val):
        if not self.take(val):
            self.fail(self.peek(), f"expected '{val}' but found {{}}")

    def fail(self, t: Tok, fmt: str = "unexpected {}"):
        hint = _HINTS.get(t.val) if t.kind == "op" else None
        desc = "end of expression" if t.kind == "eof" else f"{t.kind} {t.val!r}"
        raise ExprError(hint or fmt.format(desc), t.col)

    def nested(self, col: int, fn: Callable, *args):
        """Every recursion through parentheses, brackets, arguments or prefixes goes here."""
        self.nest += 1
        if self.nest > MAX_NEST:
            raise ExprError(f"expression is nested too deeply (limit {MAX_NEST})", col)
        out = fn(*args)
        self.nest -= 1
        return out

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise ExprError("empty expression", 1)
        node = self.expr()
        if self.peek().kind != "eof":
            self.fail(self.peek(), "unexpected {} after a complete expression")
        return node

    def expr(self, min_prec: int = 0) -> Node:  # precedence climbing
        lhs = self.prefix(min_prec)
        while (prec := _prec(t := self.peek())) is not None and prec > min_prec:
            self.i += 1
            # ** is right-associative: its right side may contain another **.
            rhs = self.expr(prec - 1 if t.val == "**" else prec)
            if prec == _CMP_PREC and _prec(self.peek()) == _CMP_PREC:
                raise ExprError("chained comparisons are not supported; combine them "
                                "with 'and'", self.peek().col)
            kind = "cmp" if prec == _CMP_PREC else "bin" if prec > _NOT else t.val
            lhs = _node(kind, t.col, t.val, lhs, rhs)
        return lhs

    def prefix(self, min_prec: int) -> Node:
        t = self.peek()
        if t.kind == "kw" and t.val == "not" or t.kind == "op" and t.val in ("-", "+"):
            if t.val == "not" and min_prec > _NOT:
                raise ExprError("'not' must be parenthesized here", t.col)
            self.i += 1
            x = self.nested(t.col, self.expr, _NOT if t.val == "not" else _UNARY)
            return _node({"not": "not", "-": "neg", "+": "pos"}[t.val], t.col, x)
        node = self.primary()
        while (t := self.peek()).kind == "op" and t.val in "[(.":
            if t.val == "(":
                raise ExprError("only whitelisted functions can be called, by name", t.col)
            if t.val == ".":
                self.fail(t)
            self.i += 1
            node = _node("index", t.col, node, self.nested(t.col, self.index_items))
        return node

    def index_items(self) -> tuple:
        items = []
        while True:
            t = self.peek()
            if self.take("..."):
                items.append(_node("ellipsis", t.col))
            else:
                parts = [None if self.at(":") else self.expr()]
                while len(parts) < 3 and self.take(":"):
                    end = self.at(":") or self.at(",") or self.at("]")
                    parts.append(None if end else self.expr())
                item = parts[0] if len(parts) == 1 else \
                    _node("slice", t.col, *parts, *[None] * (3 - len(parts)))
                items.append(replace(item, text=self.src[t.col - 1:self.peek().col - 1].strip(),
                                     start=t.col))
            if not self.take(","):
                self.expect("]")
                return tuple(items)

    def primary(self) -> Node:
        t = self.peek()
        self.i += 1
        if t.kind in ("num", "str"):
            return _node(t.kind, t.col, t.val)
        if t.kind == "kw" and t.val in ("true", "false", "True", "False"):
            return _node("num", t.col, t.val in ("true", "True"))
        if t.kind == "name":
            if self.at("("):
                return self.nested(t.col, self.call, t)
            return _node("name", t.col, t.val)
        if t.kind == "op" and t.val == "(":
            if self.at(")"):
                raise ExprError("empty parentheses (tuples) are not allowed", t.col)
            x = self.nested(t.col, self.expr)
            if self.at(","):
                raise ExprError("tuples are not allowed", self.peek().col)
            self.expect(")")
            return x
        self.fail(t)

    def call(self, name: Tok) -> Node:
        if name.val not in _FUNCS:
            raise ExprError(f"unknown function '{name.val}'; allowed: "
                            f"{', '.join(sorted(_FUNCS))}", name.col)
        self.expect("(")
        args, kwargs = [], []
        while not self.take(")"):
            t = self.peek()
            if t.kind == "name" and self.peek(1).kind == "op" and self.peek(1).val == "=":
                self.i += 2
                kwargs.append(_node("kwarg", t.col, t.val, self.expr()))
            elif kwargs:
                raise ExprError("positional argument after a keyword argument", t.col)
            else:
                args.append(self.expr())
            if not self.at(")"):
                self.expect(",")
        return _node("call", name.col, name.val, tuple(args), tuple(kwargs))


def _prec(t: Tok) -> int | None:
    return _BIN.get(t.val) if t.kind in ("op", "kw") else None


def parse(src: str) -> Node:
    if len(src) > MAX_LEN:
        raise ExprError(f"expression is too long ({len(src)} characters; limit {MAX_LEN})")
    return _Parser(src).parse()


def names_used(src: str) -> set[str]:
    """Names (not functions) an expression reads; e.g. to validate a condition up front."""
    found, stack = set(), [parse(src)]
    while stack:
        n = stack.pop()
        if n.kind == "name":
            found.add(n.args[0])
        stack.extend(_children(n.args))
    return found


# ------------------------------------------------------------------------------ evaluation

_LOWP = (torch.bfloat16, torch.float16)
_CAUGHT = (RuntimeError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError)
_META = {"shape", "numel"}  # read metadata only: no elements charged


def _kind(v) -> str:
    return "tensor" if isinstance(v, torch.Tensor) else "string" if isinstance(v, str) \
        else "number"


def _t(x, like=None) -> torch.Tensor:
    if isinstance(x, str):
        raise ExprError("expected a tensor or number, got a string")
    if isinstance(x, torch.Tensor):
        return x
    return torch.tensor(x, device=like.device if isinstance(like, torch.Tensor) else None)


def _f32(x) -> torch.Tensor:
    """bf16/fp16 (precision) and integer/bool (mean/std need floats) inputs reduce in float32."""
    x = _t(x)
    return x.float() if x.dtype in _LOWP or not x.is_floating_point() else x


def _int(d, what: str = "dim"):
    if d is None or isinstance(d, int) and not isinstance(d, bool):
        return d
    raise ExprError(f"{what} must be an integer, got a {_kind(d)}")


def _dim(x, d):
    """A dim of x, checked here so the message is ours (a 0-d tensor takes 0 and -1, as torch)."""
    x, d = _t(x), _int(d)
    n = max(x.dim(), 1)
    if d is not None and not -n <= d < n:
        raise ExprError(f"dim {d} out of range for shape {list(x.shape)} (valid {-n}..{n - 1})")
    return d


def _int64(v, what: Callable[[], str]):
    """Plain integers stay in int64 like tensor integers: no bignums, nothing float() rejects.
    `what` is only called on failure: formatting a tensor operand would cost a repr."""
    if isinstance(v, int) and not INT_MIN <= v <= INT_MAX:
        raise ExprError(f"integer overflow: {what()} does not fit in 64 bits; use a float operand "
                        f"(e.g. 2.0 ** 100) for float arithmetic")
    return v


def _check_size(shape, what: str):
    if (n := prod(shape)) > MAX_ELEMENTS:
        raise ExprError(f"{what} would create {n:,} elements (shape {list(shape)}); "
                        f"the limit is {MAX_ELEMENTS:,}")


def _bcast(what: str, *vals) -> tuple:
    shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else () for v in vals]
    try:
        out = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        raise ExprError(f"{what}: shapes {' and '.join(str(list(s)) for s in shapes)} cannot be "
                        "broadcast together") from None
    _check_size(out, what)
    return out


def _numel(*vals) -> int:
    return sum(v.numel() for v in vals if isinstance(v, torch.Tensor))


def _out_bound(vals) -> int:
    """Elements a call may write: its tensors' broadcast (elementwise ops, reductions, topk)."""
    shapes = [tuple(v.shape) for v in vals if isinstance(v, torch.Tensor)]
    try:
        return prod(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        return max(map(prod, shapes), default=0)


def _check_bounds(k: torch.Tensor, size: int, dim: int, it: Node):
    """An integer-tensor index, checked on its own device before the gather: on CUDA an
    out-of-range gather is a device-side assert that kills every session's context."""
    if k.numel() == 0:
        return
    lo, hi = torch.stack([k.amin(), k.amax()]).tolist()  # one reduction pair, one copy back
    if lo < -size or hi >= size:
        valid = f"valid {-size}..{size - 1}" if size else "the dim is empty"
        raise ExprError(f"index tensor '{it.text}' has value {lo if lo < -size else hi} out of "
                        f"range for dim {dim} with size {size} ({valid})", it.start)


def _reduce(f, conv=_f32):
    return lambda x, dim=None: f(conv(x)) if dim is None else f(conv(x), dim=_dim(x, dim))


def _topk_pair(x, k, dim=-1, what="topk"):
    """(values, int64 indices) of the k largest along dim; k and dim checked first."""
    x, k, dim = _t(x), _int(k, "k"), _dim(x, dim)
    if not 1 <= k <= (x.shape[dim] if x.dim() else 1):
        raise ExprError(f"{what}: k={k} out of range for dim {dim} of shape {list(x.shape)}")
    out = torch.topk(x, k, dim=dim)
    return out.values, out.indices


def _topk(x, k, dim=-1):
    return _topk_pair(x, k, dim)[0]


def _argtopk(x, k, dim=-1):
    return _topk_pair(x, k, dim, "argtopk")[1]


def _clamp(x, lo, hi):
    _bcast("clamp", x, lo, hi)
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        # torch.clamp takes two numbers or two tensors (on x's device), not a mix
        lo, hi = _t(lo, x), _t(hi, x)
    return torch.clamp(_t(x), lo, hi)


def _cos_sim(a, b, dim=-1):
    shape = _bcast("cos_sim", a, b)
    return F.cosine_similarity(_f32(a), _f32(b), dim=_dim(torch.empty(shape, device="meta"), dim))


_X, _XD = ("x",), ("x", "dim")
# name -> (function, parameter names, how many are required). Nothing else is callable.
_FUNCS: dict[str, tuple[Callable, tuple[str, ...], int]] = {
    **{k: (_reduce(f), _XD, 1) for k, f in {"mean": torch.mean, "std": torch.std, "var":
       torch.var, "norm": torch.linalg.vector_norm}.items()},
    # exact in the native dtype (sum still accumulates bf16/fp16 in float32)
    **{k: (_reduce(f, _t), _XD, 1) for k, f in {
        "sum": lambda x, **k: x.sum(dtype=torch.float32 if x.dtype in _LOWP else None, **k),
        "min": torch.amin, "max": torch.amax, "argmax": torch.argmax,
        "argmin": torch.argmin, "any": torch.any, "all": torch.all,
        "count_nan": lambda x, **k: torch.isnan(x).sum(**k),
        "count_inf": lambda x, **k: torch.isinf(x).sum(**k)}.items()},
    **{k: ((lambda f: lambda x: f(_t(x)))(f), _X, 1) for k, f in {
        "abs": torch.abs, "sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log,
        "isnan": torch.isnan, "isinf": torch.isinf, "zeros_like": torch.zeros_like,
        "ones_like": torch.ones_like, "numel": torch.numel}.items()},
    "softmax": (lambda x, dim=-1: torch.softmax(_f32(x), _dim(x, dim)), _XD, 1),
    "log_softmax": (lambda x, dim=-1: torch.log_softmax(_f32(x), _dim(x, dim)), _XD, 1),
    "topk": (_topk, ("x", "k", "dim"), 2),
    "argtopk": (_argtopk, ("x", "k", "dim"), 2),
    "shape": (lambda x: torch.tensor(_t(x).shape, dtype=torch.int64), _X, 1),
    "float": (lambda x: x.float() if isinstance(x, torch.Tensor) else float(_t(x)), _X, 1),
    "clamp": (_clamp, ("x", "lo", "hi"), 3),
    "cos_sim": (_cos_sim, ("a", "b", "dim"), 2),
}

# One line per function: what completions show beside its signature (docs/expressions.md says more).
_DOCS = {
    "mean": "mean over dim (all elements when omitted); float32",
    "std": "sample standard deviation (n-1) over dim; float32",
    "var": "sample variance (n-1) over dim; float32",
    "norm": "L2 norm over dim; float32",
    "sum": "sum over dim; bf16/fp16 accumulate in float32, integers stay integers",
    "min": "smallest value over dim, in the tensor's dtype",
    "max": "largest value over dim, in the tensor's dtype",
    "argmax": "index of the largest value (flat index when dim is omitted)",
    "argmin": "index of the smallest value (flat index when dim is omitted)",
    "any": "true where any element over dim is != 0",
    "all": "true where every element over dim is != 0",
    "count_nan": "number of NaN values over dim",
    "count_inf": "number of +-Inf values over dim",
    "abs": "elementwise absolute value",
    "sqrt": "elementwise square root",
    "exp": "elementwise exponential",
    "log": "elementwise natural logarithm",
    "isnan": "elementwise: is NaN",
    "isinf": "elementwise: is +-Inf",
    "zeros_like": "zeros of x's shape and dtype",
    "ones_like": "ones of x's shape and dtype",
    "numel": "number of elements, a plain integer",
    "softmax": "softmax over dim (default -1); float32",
    "log_softmax": "log-softmax over dim (default -1); float32",
    "topk": "the k largest values over dim (default -1); as the whole expression the indices come too",
    "argtopk": "int64 indices of the k largest values over dim (default -1)",
    "shape": "the shape as a 1-D int64 tensor; shape(x)[0] is a number",
    "float": "cast to float32 (a number to a float)",
    "clamp": "x limited to [lo, hi]; lo and hi numbers or tensors",
    "cos_sim": "cosine similarity of a and b over dim (default -1); float32",
}


def signature(name: str) -> str:
    """'mean(x, dim?)': required parameters plain, optional ones with '?'."""
    _, params, required = _FUNCS[name]
    return f"{name}({', '.join(p if i < required else p + '?' for i, p in enumerate(params))})"


def functions() -> list[tuple[str, str, str]]:
    """(name, signature, one-line doc) of every function an expression may call, by name."""
    return [(n, signature(n), _DOCS.get(n, "")) for n in sorted(_FUNCS)]


def parameters(name: str) -> tuple[str, ...]:
    """A function's parameter names (keyword arguments), () for anything that is not one."""
    return _FUNCS[name][1] if name in _FUNCS else ()


KEYWORDS = ("and", "or", "not", "true", "false")

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        "**": operator.pow, "@": operator.matmul, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


def _binop(op: str, a, b, charge=lambda n, what: None):
    tensors = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
    if isinstance(a, str) or isinstance(b, str):
        if any(tensors):
            raise ExprError(f"'{op}' cannot combine a tensor with a string")
        both = isinstance(a, str) and isinstance(b, str)
        if op not in ("==", "!=") and not (both and op in ("<", "<=", ">", ">=")):
            raise ExprError(f"'{op}' does not apply to a {_kind(a)} and a {_kind(b)}")
    elif op == "@":
        if not all(tensors):
            raise ExprError("'@' needs two tensors")
        meta = torch.empty(a.shape, device="meta") @ torch.empty(b.shape, device="meta")
        _check_size(meta.shape, "'@'")
        charge(a.numel() + b.numel() + meta.numel() * a.shape[-1], "'@'")  # multiply-adds
    elif any(tensors):
        charge(_numel(a, b) + prod(_bcast(f"'{op}'", a, b)), f"'{op}'")
    elif op == "**" and type(a) is int and type(b) is int and b > 0 and \
            (abs(a).bit_length() - 1) * b > 63:  # |a| ** b >= 2 ** 64: refuse before the bignum
        _int64(1 << 64, lambda: f"{a} ** {b}")
    out = _OPS[op](a, b)
    if isinstance(out, complex):
        raise ExprError(f"'{op}' of {a} and {b} is a complex number; only real numbers are "
                        "supported")
    return _int64(out, lambda: f"{a} {op} {b}")


def _is_int_tensor(k) -> bool:
    return isinstance(k, torch.Tensor) and not k.is_floating_point() and not k.is_complex()


class _Eval:
    def __init__(self, env: Mapping[str, object], limits: Limits, pair: Node | None = None):
        self.env, self.cache, self.limits, self.used = env, {}, limits, 0
        self.pair = pair   # the topk call (the whole expression) that answers values and indices
        self.deadline = time.perf_counter() + limits.max_ms / 1e3

    def charge(self, n: int, what: str):
        """Counts elements before the work that touches them, so a refused op never runs."""
        self.used += int(n)
        if self.used > (cap := self.limits.max_elements):
            raise ExprLimit(f"{what} would bring this expression's work to {self.used:,} "
                            f"elements; the limit is {cap:,}", "elements", cap)

    def clock(self):
        if time.perf_counter() > self.deadline:
            raise ExprLimit(f"expression ran past the time limit of {self.limits.max_ms:g} ms",
                            "time", self.limits.max_ms)

    def ev(self, n: Node):
        try:
            # Before a node starts, never after: refusing work already done gains nothing, and
            # the first use of a kernel in a process (lazy loading, warm-up) can take seconds.
            self.clock()
            return self.handlers[n.kind](self, n)
        except ExprError as e:
            raise e if e.col is not None else e.at(n.col)
        except torch.OutOfMemoryError as e:
            raise ExprLimit(f"out of memory: {str(e).strip().splitlines()[0][:200]}", "memory",
                            0, n.col) from None
        except _CAUGHT as e:
            if is_device_fault(e):
                raise
            what = {"bin": f"'{n.args[0]}'", "cmp": f"'{n.args[0]}'", "call": f"{n.args[0]}()",
                    "name": f"loading '{n.args[0]}'"}.get(n.kind, n.kind)
            msg = "numeric overflow" if isinstance(e, OverflowError) else \
                (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ExprError(f"{what} failed: {msg}", n.col) from None

    def name(self, n: Node):
        name = n.args[0]
        if name in self.cache:
            return self.cache[name]
        if name not in self.env:
            avail = sorted(self.env)
            more = f" (and {len(avail) - 40} more)" if len(avail) > 40 else ""
            raise ExprError(f"unknown name '{name}'; available: "
                            f"{', '.join(avail[:40]) or '(none)'}{more}")
        v = self.env[name]
        if isinstance(v, Lazy):
            self.charge(v.elements, f"loading '{name}'")
        if callable(v) and not isinstance(v, torch.Tensor):
            v = v()  # lazy: only names the expression uses are materialized, once
        if not isinstance(v, (torch.Tensor, bool, int, float, str)):
            raise ExprError(f"'{name}' has unsupported type {type(v).__name__}")
        self.cache[name] = _int64(v, lambda: f"'{name}'")
        return v

    def unary(self, n: Node):
        v = self.ev(n.args[0])
        self.charge(2 * _numel(v), f"'{n.kind}'")
        if n.kind == "not":
            return torch.logical_not(v) if isinstance(v, torch.Tensor) else not v
        if isinstance(v, str):
            raise ExprError("unary '-' and '+' do not apply to a string")
        return _int64(-v if n.kind == "neg" else +v, lambda: f"-({v})")

    def logic(self, n: Node):
        # A scalar left side short-circuits like Python (so the right side's lazy tensors
        # stay unloaded); tensors combine elementwise. The result is always boolean.
        a, is_or = self.ev(n.args[1]), n.kind == "or"
        if not isinstance(a, torch.Tensor) and bool(a) == is_or:
            return is_or
        b = self.ev(n.args[2])
        if not isinstance(a, torch.Tensor):
            self.charge(2 * _numel(b), f"'{n.kind}'")
            return b.bool() if isinstance(b, torch.Tensor) else bool(b)
        self.charge(_numel(a, b) + prod(_bcast(f"'{n.kind}'", a, _t(b))), f"'{n.kind}'")
        return (torch.logical_or if is_or else torch.logical_and)(a, _t(b))

    def binary(self, n: Node):
        return _binop(n.args[0], self.ev(n.args[1]), self.ev(n.args[2]), self.charge)

    def index(self, n: Node):
        v, items = self.ev(n.args[0]), n.args[1]
        if not isinstance(v, torch.Tensor):
            raise ExprError(f"only tensors can be indexed, not a {_kind(v)}")
        idx = [self.index_item(it) for it in items]
        if idx.count(...) > 1:
            raise ExprError("only one '...' is allowed in an index")
        # dims each item consumes: a bool mask covers as many dims as it has
        used = [0 if k is ... else k.dim() if isinstance(k, torch.Tensor) and k.dtype ==
                torch.bool else 1 for k in idx]
        if sum(used) > v.dim():
            raise ExprError(f"too many indices: tensor has {v.dim()} dims, got {sum(used)}")
        dim, gather, mask = 0, False, False
        for i, (k, u, it) in enumerate(zip(idx, used, items)):
            if k is ...:
                dim += v.dim() - sum(used)
                continue
            size = v.shape[dim] if u == 1 else 0
            if isinstance(k, int):
                if not -size <= k < size:
                    raise ExprError(f"index {k} out of range for dim {dim} with size {size}",
                                    it.col)
            elif isinstance(k, slice):  # clamp like Python, before torch warns about it
                idx[i] = slice(*(b if b is None else max(-size, min(b, size)) for b in
                                 (k.start, k.stop)), k.step and min(k.step, max(size, 1)))
            elif k.dtype == torch.bool:
                if tuple(k.shape) != tuple(v.shape[dim:dim + u]):
                    raise ExprError(f"boolean mask '{it.text}' has shape {list(k.shape)} but "
                                    f"the dims it covers ({dim}..{dim + u - 1}) have shape "
                                    f"{list(v.shape[dim:dim + u])}", it.start)
                self.charge(k.numel() + 2 * v.numel(), "a boolean mask index")
                idx[i], mask = k.to(v.device), True
            else:
                self.charge(k.numel(), f"checking index tensor '{it.text}'")
                _check_bounds(k, size, dim, it)
                idx[i], gather = k.to(v.device), True
            dim += u
        shapes = [list(k.shape) for k in idx if isinstance(k, torch.Tensor) and k.dtype != torch.bool]
        try:
            torch.broadcast_shapes(*shapes)
        except RuntimeError:
            raise ExprError(f"index tensors of shapes {', '.join(map(str, shapes))} cannot be "
                            "broadcast together") from None
        if gather and not mask:
            # integer-tensor (gather) indexing can grow the result: size it on meta first
            meta = torch.empty(v.shape, device="meta")[tuple(
                k.to("meta") if isinstance(k, torch.Tensor) else k for k in idx)]
            _check_size(meta.shape, "indexing")
            self.charge(2 * meta.numel(), "indexing")
        out = v[tuple(idx)]
        if not (gather or mask):
            self.charge(out.numel(), "indexing")  # a view: nothing ran yet, so charge after
        return out

    def index_item(self, it: Node):
        if it.kind == "ellipsis":
            return ...
        if it.kind == "slice":
            start, stop, step = (None if p is None else self.integer(p) for p in it.args)
            if step is not None and step < 1:
                raise ExprError(f"slice step must be >= 1, got {step}", it.col)
            return slice(start, stop, step)
        k = self.ev(it)
        if _is_int_tensor(k) and k.dtype != torch.bool and k.dim() == 0:
            k = k.item()  # x[argmax(y)]: behaves like a plain integer (and gets bounds-checked)
        if _is_int_tensor(k) and k.dtype not in (torch.int64, torch.int32, torch.bool):
            k = k.long()  # torch would read uint8 as a mask and refuse int8/int16
        if _is_int_tensor(k) or isinstance(k, int) and not isinstance(k, bool):
            return k
        raise ExprError(f"an index must be an integer, slice, '...' or an integer/bool "
                        f"tensor, not a {_kind(k)}", it.col)

    def integer(self, p: Node) -> int:
        v = self.ev(p)
        if _is_int_tensor(v) and v.numel() == 1:
            v = v.item()  # x[:argmax(y)]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ExprError(f"slice bounds must be integers, not a {_kind(v)}", p.col)
        return v

    def call(self, n: Node):
        name, args, kwargs = n.args
        fn, params, required = _FUNCS[name]
        sig = f"{name}({', '.join(params)})"
        if len(args) > len(params):
            raise ExprError(f"too many arguments; signature: {sig}")
        bound = dict(zip(params, map(self.ev, args)))
        for kw in kwargs:
            k = kw.args[0]
            if k not in params or k in bound:
                raise ExprError(f"{'repeated' if k in bound else 'unexpected'} argument "
                                f"'{k}'; signature: {sig}", kw.col)
            bound[k] = self.ev(kw.args[1])
        if missing := [p for p in params[:required] if p not in bound]:
            raise ExprError(f"missing argument '{missing[0]}'; signature: {sig}")
        if name not in _META:
            self.charge(_numel(*bound.values()) + _out_bound(bound.values()), f"{name}()")
        if n is self.pair:   # the whole expression is topk(...): torch makes the indices too
            fn = _topk_pair
        out = fn(**bound)
        if not isinstance(bound[params[0]], torch.Tensor):
            # numbers in, number out: sqrt(2) is a float
            one = lambda o: o.item() if isinstance(o, torch.Tensor) and o.dim() == 0 else o  # noqa: E731
            return tuple(map(one, out)) if isinstance(out, tuple) else one(out)
        return out

    handlers = {"num": lambda s, n: n.args[0], "str": lambda s, n: n.args[0], "name": name,
                "neg": unary, "pos": unary, "not": unary, "and": logic, "or": logic,
                "bin": binary, "cmp": binary, "index": index, "call": call}


class _WarmUp:
    """The server loads the kernels expressions use on a thread of its own after it starts serving
    (seconds on a fresh GPU process). Until that is done an evaluation elsewhere waits for it
    first, outside its time limit, so a user's first expression is not refused by --expr-max-ms."""

    def __init__(self):
        self.done = threading.Event()
        self.done.set()
        self.thread_id: int | None = None

    def run(self, fn) -> threading.Thread:
        self.done.clear()

        def body():
            self.thread_id = threading.get_ident()
            try:
                fn()
            finally:
                self.done.set()
        t = threading.Thread(target=body, name="djinn-expr-warm-up", daemon=True)
        t.start()
        return t

    def wait(self, timeout: float = 120.0) -> None:
        if not self.done.is_set() and threading.get_ident() != self.thread_id:
            self.done.wait(timeout)


warm_up = _WarmUp()


def evaluate(src: str, env: Mapping[str, object], limits: Limits | None = None) -> object:
    """Evaluate `src` over `env` (tensors, lazy zero-arg callables, numbers, strings).

    Raises ExprError for anything wrong with the expression, ExprLimit (a subclass) when it
    would exceed `limits`; device faults (CUDA errors) pass through unchanged."""
    warm_up.wait()
    tree = parse(src)
    with torch.no_grad():  # never build autograd graphs over model activations
        return _Eval(env, limits or Limits()).ev(tree)


@dataclass(frozen=True)
class Outcome:
    """What an expression gives as a whole, for display: `value` (as `evaluate` returns it),
    `also` (further results: topk's indices) and `kind`: "topk" or "shape" when the whole
    expression is that call (a shape displays as a list), "" otherwise."""
    value: object
    also: tuple = ()
    kind: str = ""


def evaluate_outcome(src: str, env: Mapping[str, object], limits: Limits | None = None) -> Outcome:
    """`evaluate`, except that `topk(...)` as the whole expression answers its values with its
    indices in `also` (inside a larger expression topk stays the values), and the outcome says
    whether the whole expression was a call to topk or shape."""
    warm_up.wait()
    tree = parse(src)
    top = tree.args[0] if tree.kind == "call" and tree.args[0] in ("topk", "shape") else ""
    with torch.no_grad():
        out = _Eval(env, limits or Limits(), tree if top == "topk" else None).ev(tree)
    if top == "topk":
        return Outcome(out[0], (out[1],), top)
    return Outcome(out, (), top)
