"""Logpoint messages: DAP logMessage text whose {expression} parts are evaluated at a stop point.

`{{` and `}}` are literal braces; inside a part, a `}` in a string literal does not end it.
The server formats the whole line (no round trip per hit): a tensor part is summarised
briefly, a number or string plainly. A part that fails says so in the line; nothing stops.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..inspect.expr import ExprError, Limits, evaluate, is_device_fault, parse
from ..inspect.tensors import MAX_VALUES, format_value, format_values, summarize

MAX_MESSAGE = 2000     # characters of a log message
MAX_PARTS = 32         # {expression} parts in one message
MAX_LINE = 8000        # characters of one printed line (longer ones are cut)
_SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32"}


@lru_cache(maxsize=1024)
def parse_message(text: str) -> tuple[tuple[str, str], ...]:
    """('text', literal) and ('expr', source) pieces, in order. ValueError says what is wrong
    (1-based columns), so a client can show the logpoint as unverified with the reason."""
    if len(text) > MAX_MESSAGE:
        raise ValueError(f"log message of {len(text)} characters; the limit is {MAX_MESSAGE}")
    pieces: list[tuple[str, str]] = []
    lit, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in "{}" and text[i + 1:i + 2] == c:      # {{ or }}: a literal brace
            lit.append(c)
            i += 2
            continue
        if c == "}":
            raise ValueError(f"'}}' at column {i + 1} closes nothing; write '}}}}' for a literal brace")
        if c != "{":
            lit.append(c)
            i += 1
            continue
        end = _part_end(text, i + 1)
        if end < 0:
            raise ValueError(f"'{{' at column {i + 1} is never closed; write '{{{{' for a literal brace")
        src = text[i + 1:end]
        if not src.strip():
            raise ValueError(f"empty {{}} at column {i + 1}")
        try:
            parse(src)
        except ExprError as e:
            raise ValueError(f"{{{src}}} at column {i + 1}: {e}") from None
        if lit:
            pieces.append(("text", "".join(lit)))
            lit = []
        pieces.append(("expr", src))
        i = end + 1
    if lit:
        pieces.append(("text", "".join(lit)))
    if sum(k == "expr" for k, _ in pieces) > MAX_PARTS:
        raise ValueError(f"more than {MAX_PARTS} {{expression}} parts")
    return tuple(pieces)


def _part_end(text: str, i: int) -> int:
    """Index of the '}' that ends the part starting at i (quotes respected), or -1."""
    quote = ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "}":
            return i
        i += 1
    return -1


def show(v) -> str:
    """A value as a logpoint prints it: numbers plainly (6 significant digits), a tensor of one
    element as its value, up to 16 as nested lists, larger ones as dtype[shape] μ σ ‖x‖ (plus
    nan/inf counts when there are any)."""
    if isinstance(v, torch.Tensor):
        dtype = str(v.dtype).removeprefix("torch.")
        if v.numel() == 1:
            return format_value(v.reshape(()).item(), dtype)
        if 0 < v.numel() <= MAX_VALUES:
            return format_values(v.reshape(-1).tolist(), list(v.shape), dtype)
        head = f"{_SHORT.get(dtype, dtype)}{list(v.shape)}"
        if v.numel() == 0:
            return f"{head} empty"
        d = summarize(v)
        line = f"{head} μ={d['mean']:.4g} σ={d['std']:.4g} ‖x‖={d['l2_norm']:.4g}"
        if d["nan_count"]:
            line += f" nan={d['nan_count']}"
        if d["inf_count"]:
            line += f" inf={d['inf_count']}"
        return line
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_message(text: str, env, limits: Limits | None = None) -> str:
    """The printed line. A part that fails is shown as <error: why>; device faults pass through."""
    out = []
    for kind, piece in parse_message(text):
        if kind == "text":
            out.append(piece)
            continue
        try:
            out.append(show(evaluate(piece, env, limits)))
        except (ExprError, ValueError, RuntimeError) as e:   # OutOfMemoryError is a RuntimeError
            if is_device_fault(e):
                raise
            why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            out.append(f"<error: {why}>")
    line = "".join(out)
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 1] + "…"
