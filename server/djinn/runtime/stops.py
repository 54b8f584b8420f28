"""Decides whether a session stops at the point it just reached, and why.

First, at every stop point: logpoints print (condition, then hit count, then the message;
they never stop) and data breakpoints are checked (so their "became true" and hit counts
stay right whatever else stops here). Then the order: a pause request, a step that reached
its target, the NaN/Inf/norm-spike traps, data breakpoints, then breakpoints (condition
first, then the hit count, as debuggers do). A data breakpoint that fires where a pause,
step or trap stops adds its id and message to that stop.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..inspect.expr import ExprError, Lazy, evaluate, names_used, parse
from .catalog import ALL_TENSORS, SCALARS, TENSORS_AT, expression_env, scalars
from .engine import Engine
from .faults import is_device_fault
from .logpoints import format_message, parse_message
from .session import ATTN, LAYER, MLP, BreakpointSpec, DataBreakpointSpec, Session

MAX_DATA_BREAKPOINTS = 64   # per client and session: each is an expression at every stop point

_HIT = re.compile(r"^\s*(==|>=|<=|>|<|%)?\s*(\d+)\s*$")


def parse_hit_condition(text: str):
    """'5' or '== 5', '>= 5', '> 5', '<= 5', '< 5', '% 5' -> predicate on the hit count."""
    if not text.strip():
        return lambda n: True
    m = _HIT.match(text)
    if not m:
        raise ValueError(f"hit condition '{text}' is not one of: N, == N, >= N, > N, <= N, < N, % N")
    op, n = m.group(1) or "==", int(m.group(2))
    if op == "%" and n == 0:
        raise ValueError("hit condition '% 0' divides by zero")
    return {"==": lambda h: h == n, ">=": lambda h: h >= n, "<=": lambda h: h <= n,
            ">": lambda h: h > n, "<": lambda h: h < n, "%": lambda h: h % n == 0}[op]


def _truthy(value) -> bool:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ExprError(f"a condition must give one value, not a tensor of shape {list(value.shape)}")
        return bool(value.item())
    return bool(value)


def _fresh_tensor(s: Session) -> torch.Tensor:
    """The activation the last piece of work produced."""
    acts = s.memory.acts
    return {LAYER: acts.get("hidden"), ATTN: acts.get("attn_out"), MLP: acts.get("mlp_out")}[s.point]


class _Once:
    """A lazy tensor's loader that loads once: conditions and messages of one stop point share it."""
    __slots__ = ("load", "value")

    def __init__(self, load):
        self.load, self.value = load, None

    def __call__(self):
        if self.value is None:
            self.value = self.load()
        return self.value


class _Names(Mapping):
    """The expression names of one stop point. The position scalars are at hand; the tensor
    catalog is made only when an expression asks for a name that is not a scalar (a logpoint
    printing `{layer}` costs no catalog), and each tensor is loaded at most once for all the
    conditions and messages evaluated here (nothing writes meanwhile)."""

    def __init__(self, engine: Engine, s: Session):
        self.engine, self.s, self.scalars, self._all = engine, s, scalars(s), None

    def _full(self) -> dict:
        if self._all is None:
            self._all = {k: Lazy(_Once(v.load), v.elements) if isinstance(v, Lazy) else v
                         for k, v in expression_env(self.engine, self.s).items()}
        return self._all

    def __getitem__(self, name):
        return self.scalars[name] if name in self.scalars else self._full()[name]

    def __contains__(self, name):
        return name in self.scalars or name in self._full()

    def __iter__(self):
        return iter(self._full())

    def __len__(self):
        return len(self._full())


class _Env:
    def __init__(self, engine: Engine, s: Session):
        self.engine, self.s, self._env = engine, s, None
        self.limits = getattr(engine, "expr_limits", None)

    def get(self) -> Mapping:
        if self._env is None:
            self._env = _Names(self.engine, self.s)
        return self._env

    def truth(self, condition: str) -> bool:
        return _truthy(evaluate(condition, self.get(), self.limits))


def check_stop(engine: Engine, s: Session, log=lambda client, bp_id, text: None) -> tuple[str, list, str] | None:
    """Returns (reason, hit breakpoint ids, message) when the session must stop here.
    `log(client, logpoint id, text)` prints a logpoint's line (an output event)."""
    env = _Env(engine, s)
    _logpoints(s, env, log)
    data_hits, data_msg = _data_breakpoints(s, env) if s.data_breakpoints else ([], "")
    stop = _control(s) or _check_traps(s)
    if stop:
        if data_hits:
            reason, hits, message = stop
            return reason, hits + data_hits, "; ".join(m for m in (message, data_msg) if m)
        return stop
    if data_hits:
        return "data", data_hits, data_msg
    return _breakpoints(s, env)


def _control(s: Session):
    """A pause request, a step that reached its target, or the entry stop."""
    if s.pause_requested:
        s.pause_requested = False
        return "pause", [], ""
    if s.step_kind:
        new_pass = s.pass_index > s.step_from_pass
        reached = (s.step_kind == "sublayer" or (s.step_kind == "layer" and s.point == LAYER)
                   or (s.step_kind == "token" and s.point == LAYER and s.layer == 0 and new_pass))
        if reached:
            s.step_kind = ""
            return "step", [], ""
    if s.stop_on_entry and s.pass_index == 0 and s.layer == 0 and s.point == LAYER:
        s.stop_on_entry = False
        return "entry", [], ""
    return None


def _logpoints(s: Session, env: _Env, log) -> None:
    for client, bps in list(s.breakpoints.items()):
        for bp in bps:
            if not bp.log_message or bp.layer != s.layer or bp.point != s.point:
                continue
            if bp.condition:
                try:
                    if not env.truth(bp.condition):
                        continue
                except (ExprError, ValueError, RuntimeError) as e:
                    if is_device_fault(e):
                        raise
                    log(client, bp.id, f"logpoint {bp.id}: condition error: {e}")   # a line, never a stop
                    continue
            bp.hits += 1
            if parse_hit_condition(bp.hit_condition)(bp.hits):
                log(client, bp.id, format_message(bp.log_message, env.get(), env.limits))


def _data_breakpoints(s: Session, env: _Env) -> tuple[list, str]:
    """Each data breakpoint whose tensors exist here: evaluated; it fires where its condition
    becomes true (or first fails: a broken condition stops once, not at every point)."""
    here = TENSORS_AT[s.point]
    hits, messages = [], []
    for client, dbs in list(s.data_breakpoints.items()):
        for db in dbs:
            if not all(t in here for t in db.tensors):
                continue
            try:
                now, why = ("true" if env.truth(db.condition) else "false"), ""
            except (ExprError, ValueError, RuntimeError) as e:
                if is_device_fault(e):
                    raise
                now, why = "error", str(e)
            became, db.last = now != db.last and now != "false", now
            if not became:
                continue
            if now == "error":
                hits.append((client, db.id))
                messages.append(f"data breakpoint {db.id}: condition error: {why}")
                continue
            db.hits += 1
            if parse_hit_condition(db.hit_condition)(db.hits):
                hits.append((client, db.id))
                messages.append(f"data breakpoint {db.id}: {db.condition} became true at {s.module_name()}")
    return hits, "; ".join(messages)


def _breakpoints(s: Session, env: _Env):
    hits, message = [], ""
    for client, bps in list(s.breakpoints.items()):
        for bp in bps:
            if bp.log_message or bp.layer != s.layer or bp.point != s.point:
                continue
            if bp.condition:
                try:
                    if not env.truth(bp.condition):
                        continue
                except (ExprError, ValueError, RuntimeError) as e:
                    if is_device_fault(e):
                        raise
                    # A broken condition stops the session and says why, as other debuggers do.
                    hits.append((client, bp.id))
                    message = f"breakpoint {bp.id}: condition error: {e}"
                    continue
            bp.hits += 1
            if parse_hit_condition(bp.hit_condition)(bp.hits):
                hits.append((client, bp.id))
    return ("breakpoint", hits, message) if hits else None


def _check_traps(s: Session):
    t = s.traps
    if not (t.nan or t.inf or t.norm_spike):
        return None
    x = _fresh_tensor(s)
    if x is None:
        return None
    f = x.float()
    nan, inf = int(torch.isnan(f).sum()), int(torch.isinf(f).sum())
    where = s.module_name()
    if t.nan and nan:
        return "nan", [], f"{nan} NaN value(s) at {where}"
    if t.inf and inf:
        return "inf", [], f"{inf} Inf value(s) at {where}"
    if t.norm_spike and s.point == LAYER:
        norm = float(torch.linalg.vector_norm(torch.nan_to_num(f)))
        prev, s.prev_norm = s.prev_norm, norm
        if s.layer > 0 and prev > 0 and norm > prev * t.norm_spike:
            return "norm_spike", [], f"||hidden|| grew {norm / prev:.1f}x into {where} ({prev:.3g} -> {norm:.3g})"
    return None


def validate_breakpoint(bp: BreakpointSpec, n_layers: int) -> str:
    """'' when valid, else the reason (shown by the client as an unverified breakpoint)."""
    if not 0 <= bp.layer < n_layers:
        return f"layer {bp.layer} does not exist: the model has layers 0..{n_layers - 1}"
    try:
        parse_hit_condition(bp.hit_condition)
    except ValueError as e:
        return str(e)
    if bp.condition:
        try:
            parse(bp.condition)
        except ExprError as e:
            return f"condition: {e}"
    if bp.log_message:
        try:
            parse_message(bp.log_message)
        except ValueError as e:
            return f"log message: {e}"
    return ""


def validate_data_breakpoints(dbs: list[DataBreakpointSpec]) -> str:
    """'' when every one is valid (and each gets its `tensors`), else why the first is not,
    naming it: the whole set is then refused (INVALID_ARGUMENT)."""
    if len(dbs) > MAX_DATA_BREAKPOINTS:
        return f"{len(dbs)} data breakpoints; the limit is {MAX_DATA_BREAKPOINTS} per client and session"
    seen: set[int] = set()
    for db in dbs:
        why = _data_breakpoint_problem(db, seen)
        if why:
            return f"data breakpoint {db.id}: {why}"
        seen.add(db.id)
    return ""


def _data_breakpoint_problem(db: DataBreakpointSpec, seen: set[int]) -> str:
    watchable = ", ".join(sorted(ALL_TENSORS))
    if db.id in seen:
        return f"id {db.id} is used twice"
    if db.tensor.startswith("$"):
        return (f"'{db.tensor}' is an Evaluate result, dropped when the session resumes; a data breakpoint "
                f"watches a tensor of the forward pass: {watchable}")
    if db.tensor not in ALL_TENSORS:
        return f"no tensor '{db.tensor}' to watch; one of: {watchable}"
    if not db.condition.strip():
        return (f"needs a condition over '{db.tensor}', e.g. max(abs({db.tensor})) > 1000 (an activation "
                "changes at every stop point: a data breakpoint stops where its condition becomes true)")
    try:
        names = names_used(db.condition)
    except ExprError as e:
        return f"condition: {e}"
    for name in sorted(names):
        if name.startswith("$"):
            return f"condition: '{name}' is an Evaluate result, dropped when the session resumes"
        if name not in ALL_TENSORS and name not in SCALARS:
            return f"condition: unknown name '{name}'; available: {', '.join(sorted(ALL_TENSORS) + list(SCALARS))}"
    if db.tensor not in names:
        return f"its condition does not use '{db.tensor}', the tensor it watches"
    try:
        parse_hit_condition(db.hit_condition)
    except ValueError as e:
        return str(e)
    db.tensors = frozenset(names & ALL_TENSORS)
    return ""


def data_breakpoint_scope(db: DataBreakpointSpec) -> str:
    """Where it is checked, in words (shown as the data breakpoint's message)."""
    points = [p for p, names in TENSORS_AT.items() if all(t in names for t in db.tensors)]
    where = "every stop point" if len(points) == len(TENSORS_AT) else \
        " and ".join({LAYER: "layer inputs", ATTN: "after attention", MLP: "after the MLP"}[p] for p in points)
    return f"checked where {', '.join(sorted(db.tensors))} exist{'s' if len(db.tensors) == 1 else ''} ({where})"
