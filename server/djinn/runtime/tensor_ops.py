"""Reading and writing a paused session's tensors. Runs on the worker thread only.

Summaries are computed on the device with one transfer of a few scalars; slices copy only
the region asked for; writes check shape and dtype and change the rest of the pass.
Evaluate never lets an exception other than a DjinnError out (device faults excepted: those
must reach the server as themselves), and stores its results on the host, bounded.
"""
from __future__ import annotations

import time

import torch

from ..inspect.expr import ExprError, ExprLimit, Limits, Outcome, evaluate_outcome, is_device_fault
from ..inspect.tensors import (SliceError, dtype_name, format_summary_line, from_bytes,
                               parse_slice, summarize, to_bytes)
from .catalog import Entry, catalog, expression_env
from .engine import Engine
from .errors import DjinnError, exhausted, invalid, not_found, out_of_range, precondition
from .session import Session


def _entry(engine: Engine, s: Session, name: str) -> Entry:
    entries = catalog(engine, s)
    if name not in entries:
        raise not_found(f"no tensor '{name}' at {s.module_name()} of session {s.id}; available: {', '.join(entries)}")
    return entries[name]


def summary(name: str, t: torch.Tensor, entry: Entry | None) -> dict:
    t0 = time.perf_counter()
    d = summarize(t)
    d.update(name=name, writable=bool(entry and entry.writable), description=entry.description if entry else "",
             compute_ms=(time.perf_counter() - t0) * 1e3)
    return d


def list_tensors(engine: Engine, s: Session) -> list[dict]:
    out = []
    for name, e in catalog(engine, s).items():
        # Lazy entries cost a projection (or the whole vocabulary): listed without statistics.
        out.append(dict(name=name, description=e.description, writable=False) if e.lazy else summary(name, e.get(), e))
    return out


def _slice(t: torch.Tensor, dims) -> torch.Tensor:
    try:
        return t[parse_slice(tuple(t.shape), dims)]
    except SliceError as e:
        raise out_of_range(f"slice of a tensor of shape {list(t.shape)}: {e}") from None


def get_tensor(engine: Engine, s: Session, name: str, dims, summary_only: bool):
    """Returns (summary of the region, region shape, dtype name, raw bytes or b'')."""
    e = _entry(engine, s, name)
    t = e.get()
    region = _slice(t, dims) if dims else t
    summ = summary(name, region, e)
    data = b"" if summary_only else to_bytes(region)
    return summ, list(region.shape), dtype_name(region.dtype), data


def set_tensor(engine: Engine, s: Session, name: str, dims, mode: str, dtype: str, shape, data: bytes,
               scalar: float | None) -> dict:
    e = _entry(engine, s, name)
    if not e.writable:
        raise precondition(f"'{name}' is read-only at {s.module_name()}; writable here: "
                           + ", ".join(n for n, x in catalog(engine, s).items() if x.writable))
    t = e.get()
    region = _slice(t, dims) if dims else t
    if scalar is not None:
        value = torch.tensor(scalar, dtype=region.dtype, device=region.device)
    else:
        if dtype != dtype_name(t.dtype):
            raise invalid(f"dtype {dtype or '(none)'} does not match '{name}', which is {dtype_name(t.dtype)}")
        if list(shape) != list(region.shape):
            raise invalid(f"shape {list(shape)} does not match the region of '{name}', which is {list(region.shape)}")
        try:
            value = from_bytes(data, dtype, list(shape)).to(region.device)
        except ValueError as err:
            raise invalid(str(err)) from None
    with torch.no_grad():
        if mode == "add":
            region.add_(value)
        else:
            region.copy_(value)
    return summary(name, t, e)


MiB = 1 << 20
_size = lambda n: f"{n / MiB:.1f} MiB" if n >= MiB else f"{n:,} bytes"  # noqa: E731
_HOW = {"elements": "raise it with the server flag --expr-max-elements, or work on a slice",
        "time": "raise it with the server flag --expr-max-ms, or work on a slice",
        "memory": "work on a slice"}


def evaluate_expression(engine: Engine, s: Session, expression: str) -> dict:
    t0 = time.perf_counter()
    limits = getattr(engine, "expr_limits", None) or Limits()
    try:
        with torch.no_grad():
            outcome = evaluate_outcome(expression, expression_env(engine, s), limits)
            out = _result(s, expression, outcome, limits)
    except DjinnError:
        raise
    except ExprLimit as e:
        raise exhausted(f"expression: {e}; {_HOW[e.limit]}") from None
    except ExprError as e:
        raise invalid(f"expression: {e}") from None
    except torch.OutOfMemoryError as e:
        raise exhausted(f"expression: out of memory ({str(e).splitlines()[0][:200]}); {_HOW['memory']}") from None
    except Exception as e:  # noqa: BLE001 - last resort: the common cases above are specific
        if is_device_fault(e):
            raise
        raise invalid(f"expression failed: {type(e).__name__}: {e}") from None
    out["compute_ms"] = (time.perf_counter() - t0) * 1e3
    return out


def _result(s: Session, expression: str, outcome: Outcome, limits: Limits) -> dict:
    """The answer to Evaluate. A tensor result (anything but a single value; always for topk and
    shape as the whole expression) is stored as $N; topk's indices follow as $N+1, in `also`."""
    value, kind = outcome.value, outcome.kind
    tensors = [value, *outcome.also]
    if all(isinstance(t, torch.Tensor) for t in tensors) and (kind or value.numel() != 1):
        held = sum(t.numel() * t.element_size() for t in s.results.values())
        size = sum(t.numel() * t.element_size() for t in tensors)   # topk: values and indices
        if held + size > limits.max_result_bytes:
            raise exhausted(f"this result ({_size(size)}) would bring session {s.id}'s stored results to "
                            f"{_size(held + size)}; the limit is {_size(limits.max_result_bytes)}: "
                            "resume the session (that drops its results) or evaluate a slice")
        answers = [_store(s, t, expression if i == 0 else f"indices of {expression}", kind)
                   for i, t in enumerate(tensors)]
        out = answers[0]
        if len(answers) > 1:
            out["also"] = answers[1:]
        return out
    out: dict = {}
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool):
        out.update(is_bool=True, scalar=float(value), value="true" if value else "false")
    elif isinstance(value, (int, float)):
        out.update(scalar=float(value), value=f"{value:.6g}" if isinstance(value, float) else str(value))
    else:
        out.update(value=str(value))
    return out


def _store(s: Session, t: torch.Tensor, description: str, kind: str) -> dict:
    rname = f"${s.result_counter + 1}"
    summ = summary(rname, t, None)   # on the device, before the copy (values included)
    # A host copy, also of a CPU tensor (copy=True): a view would keep its base alive (k_cache's
    # is the whole KV buffer, past a swap-out), would change when the source is written, and
    # device memory held here is memory the VRAM budget does not see.
    s.results[rname] = t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
    s.result_counter += 1
    summ["description"] = description
    # shape(x) reads as the list it is; the stored $N stays an int64 tensor (shape(x)[0] works)
    line = str(s.results[rname].tolist()) if kind == "shape" else format_summary_line(summ)
    return dict(is_tensor=True, summary=summ, result_name=rname, value=line)


def logit_lens(engine: Engine, s: Session, top_k: int, tensor: str, position: int) -> list[dict]:
    h = _entry(engine, s, tensor or "hidden").get()
    if h.dim() != 2 or h.shape[-1] != engine.args.dim:
        raise invalid(f"the logit lens needs a [tokens, {engine.args.dim}] tensor; '{tensor}' is {list(h.shape)}")
    T = h.shape[0]
    pos = position + T if position < 0 else position
    if not 0 <= pos < T:
        raise out_of_range(f"position {position} out of range for {T} token(s) in this pass")
    k = min(max(top_k or 5, 1), engine.args.vocab_size)
    with torch.no_grad():
        logits = engine.model.logits(h[pos:pos + 1])[0]
        probs = torch.softmax(logits, -1)
        p, idx = probs.topk(k)
        rows = torch.stack([idx.float(), p, logits[idx]]).tolist()   # one transfer
    tok = engine.tokenizer
    return [dict(token=int(i), text=tok.token_text(int(i)), prob=pr, logit=lg) for i, pr, lg in zip(*rows)]
