"""Decides whether a session stops at the point it just reached, and why.

Order: a pause request, a step that reached its target, the NaN/Inf/norm-spike traps,
then breakpoints (condition first, then the hit count, as debuggers do).
"""
from __future__ import annotations

import re

import torch

from ..inspect.expr import ExprError, evaluate
from .catalog import expression_env
from .engine import Engine
from .faults import is_device_fault
from .session import ATTN, LAYER, MLP, BreakpointSpec, Session

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


def check_stop(engine: Engine, s: Session) -> tuple[str, list[int], str] | None:
    """Returns (reason, hit breakpoint ids, message) when the session must stop here."""
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
    trap = _check_traps(s)
    if trap:
        return trap
    hits, message = [], ""
    env = None
    for client, bps in list(s.breakpoints.items()):
        for bp in bps:
            if bp.layer != s.layer or bp.point != s.point:
                continue
            if bp.condition:
                env = env or expression_env(engine, s)
                try:
                    if not _truthy(evaluate(bp.condition, env, getattr(engine, "expr_limits", None))):
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
        from ..inspect.expr import parse

        try:
            parse(bp.condition)
        except ExprError as e:
            return f"condition: {e}"
    return ""
