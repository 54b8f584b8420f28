"""Completions for the Debug Console and watch expressions: the word before the cursor
completed from the tensor names at the session's stop, its $N results and position scalars,
keyword arguments of the call the cursor is in, the expression language's functions (with
their signatures) and keywords.

Nothing here computes a tensor or swaps a session in: shapes come from the model's
dimensions (and a $N's host copy), so a completion costs microseconds at any session state.
"""
from __future__ import annotations

import re

from ..inspect.expr import KEYWORDS, functions, parameters, signature
from ..inspect.tensors import dtype_name
from .catalog import ALL_TENSORS, SCALARS, TENSORS_AT, catalog, scalars
from .engine import Engine
from .errors import invalid
from .session import LAYER, PAUSED, Session

MAX_TEXT = 10_000
MAX_ITEMS = 200
_WORD = re.compile(r"(\$\d*|[A-Za-z_][A-Za-z0-9_]*)$")
_SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64", "int64": "i64"}
# sort order: what is most likely meant first
_ORDER = {"argument": "0", "tensor": "1", "scalar": "2", "result": "3", "function": "4", "keyword": "5"}


def _units(text: str) -> int:
    """Length in UTF-16 code units (DAP's columns)."""
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def cursor_index(text: str, column: int) -> int:
    """The Python index of DAP column `column` (1-based UTF-16 units; 0 = end of text)."""
    if len(text) > MAX_TEXT:
        raise invalid(f"text of {len(text)} characters; the limit is {MAX_TEXT}")
    if column == 0:
        return len(text)
    if not 1 <= column <= _units(text) + 1:
        raise invalid(f"column {column} is outside the text (1..{_units(text) + 1}; 0 = the end)")
    units = 0
    for i, c in enumerate(text):
        if units >= column - 1:
            return i
        units += 2 if ord(c) > 0xFFFF else 1
    return len(text)


def _scan(before: str) -> tuple[bool, list[int]]:
    """Whether `before` ends inside a string literal, and the indices of its unclosed '('."""
    quote, opens, i = "", [], 0
    while i < len(before):
        c = before[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([":
            opens.append(i if c == "(" else -1)
        elif c in ")]" and opens:
            opens.pop()
        i += 1
    return bool(quote), opens


def _calling(before: str, opens: list[int]) -> str:
    """The function whose argument list the cursor is in ('' if none, or inside brackets)."""
    if not opens or opens[-1] < 0:
        return ""
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:opens[-1]])
    return m.group(1) if m and parameters(m.group(1)) else ""


def _tensor_detail(engine: Engine, s: Session, name: str, description: str) -> str:
    a, T = engine.args, int(s.pass_tokens.shape[0])
    end = s.input_pos + (0 if s.point == LAYER else T)
    shapes = {"hidden": [T, a.dim], "attn_out": [T, a.dim], "mlp_out": [T, a.dim],
              "q": [a.n_heads, T, a.head_dim], "k": [a.n_kv_heads, T, a.head_dim], "v": [a.n_kv_heads, T, a.head_dim],
              "k_cache": [a.n_kv_heads, end, a.head_dim], "v_cache": [a.n_kv_heads, end, a.head_dim],
              "logits": [T, a.vocab_size], "tokens": [T]}
    dtype = {"logits": "float32", "tokens": "int64"}.get(name, dtype_name(engine.dtype))
    return f"{_SHORT.get(dtype, dtype)}{shapes[name]} {description}"


def _candidates(engine: Engine, s: Session | None, calling: str) -> list[tuple[str, str, str, str, str]]:
    """(label, DAP type, detail, text to insert, group) of everything that could be typed here."""
    out = []
    if calling:
        sig = signature(calling)
        out += [(f"{p}=", "property", f"keyword argument of {sig}", "", "argument") for p in parameters(calling)]
    if s is not None and s.state == PAUSED and s.pass_tokens is not None:
        for name, e in catalog(engine, s).items():   # closures only: nothing is computed
            if name in ALL_TENSORS:
                out.append((name, "variable", _tensor_detail(engine, s, name, e.description), "", "tensor"))
        out += [(k, "value", f"{v!r} ({k} at this stop)" if isinstance(v, str) else f"{v} ({k} at this stop)", "", "scalar")
                for k, v in scalars(s).items()]
        for name, t in s.results.items():
            dt = dtype_name(t.dtype)
            out.append((name, "variable", f"{_SHORT.get(dt, dt)}{list(t.shape)} Evaluate result (until the session "
                                          "resumes)", "", "result"))
    else:   # not at a stop: the names an expression will have there
        where = {n: [p for p, names in TENSORS_AT.items() if n in names] for n in ALL_TENSORS}
        out += [(n, "variable", f"tensor at a stop ({'every point' if len(where[n]) == 3 else ', '.join(where[n])})",
                 "", "tensor") for n in sorted(ALL_TENSORS)]
        out += [(k, "value", "position scalar at a stop", "", "scalar") for k in SCALARS]
    out += [(name, "function", f"{sig}: {doc}", "", "function") for name, sig, doc in functions()]
    out += [(k, "keyword", "", "", "keyword") for k in KEYWORDS]
    return out


def complete(engine: Engine, s: Session | None, text: str, column: int) -> dict:
    """{'items': [...], 'start': UTF-16 offset of the word completed, 'length': its UTF-16 length}."""
    cursor = cursor_index(text, column)
    before = text[:cursor]
    in_string, opens = _scan(before)
    m = _WORD.search(before)
    prefix = m.group(1) if m else ""
    start = cursor - len(prefix)
    prev = before[start - 1:start]
    empty = dict(items=[], start=_units(text[:cursor]), length=0)
    if in_string or prev == "." or (prev.isdigit() and not prefix.startswith("$")) or (prev == "$"):
        return empty   # inside a string, after '.' (no attributes), or inside a number
    items = []
    for label, kind, detail, insert, group in _candidates(engine, s, _calling(before[:start], opens)):
        if label.startswith(prefix):
            items.append(dict(label=label, type=kind, detail=detail, text=insert, sort_text=_ORDER[group] + label))
    items.sort(key=lambda d: d["sort_text"])
    return dict(items=items[:MAX_ITEMS], start=_units(text[:start]), length=_units(prefix))
