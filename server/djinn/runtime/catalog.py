"""The tensors a paused session offers, by name, and what each one means.

Entries are lazy where computing them costs work (q/k/v before attention ran, the logit
lens): nothing is computed unless a client asks for it. `$N` results are host copies (never
views of the KV buffer or activations, never device memory): expressions get them back on the
session's device, and only when they use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..inspect.expr import Lazy
from .engine import Engine
from .session import ATTN, LAYER, MLP, Session


@dataclass
class Entry:
    get: Callable[[], torch.Tensor]
    writable: bool
    description: str
    lazy: bool = False   # computed only when asked for (listing shows no statistics)
    cost: int = 0        # elements read and written to compute it: charged to an expression's limit


# The tensors each stop point offers, in catalog order ($N results come after them), and the
# position scalars every expression sees. Data breakpoints and completions read these, so that
# they need no tensor (nor a swap-in); test_completions checks them against `catalog`.
TENSORS_AT = {
    LAYER: ("hidden", "q", "k", "v", "k_cache", "v_cache", "logits", "tokens"),
    ATTN: ("hidden", "attn_out", "q", "k", "v", "k_cache", "v_cache", "logits", "tokens"),
    MLP: ("hidden", "attn_out", "q", "k", "v", "mlp_out", "k_cache", "v_cache", "logits", "tokens"),
}
ALL_TENSORS = frozenset(n for names in TENSORS_AT.values() for n in names)


def scalars(s: Session) -> dict:
    """Where the session is, as plain values: `token` is the pass (0 = prefill)."""
    return dict(token=s.pass_index, pos=s.input_pos, layer=s.layer, session=s.id, phase=s.phase,
                point=s.point, ntokens=int(s.pass_tokens.shape[0]), generated=len(s.generated))


SCALARS = ("token", "pos", "layer", "session", "phase", "point", "ntokens", "generated")


def catalog(engine: Engine, s: Session) -> dict[str, Entry]:
    acts, kv = s.memory.acts, s.memory.kv
    L, point, model = s.layer, s.point, engine.model
    layer = model.layers[L]
    mod = s.module_name()
    T = s.pass_tokens.shape[0]
    a = engine.args
    qkv_cost = T * a.dim + (a.dim + T) * (a.n_heads + 2 * a.n_kv_heads) * a.head_dim
    out: dict[str, Entry] = {}
    where = {LAYER: f"input of layers.{L}", ATTN: f"input of layers.{L} (attention not yet added)",
             MLP: f"residual after layers.{L} attention (MLP not yet added)"}[point]
    out["hidden"] = Entry(lambda: acts["hidden"], True, f"residual stream [tokens, dim]: {where}")
    if point == LAYER:
        def lazy_qkv(i):
            def f():
                with torch.no_grad():   # (not torch.no_grad()(f): making that wrapper costs more than the catalog)
                    c, sn = engine.rope(s)
                    return layer.self_attn.qkv(layer.input_layernorm(acts["hidden"]), c, sn)[i]
            return f
        for i, n in enumerate("qkv"):
            out[n] = Entry(lazy_qkv(i), False, f"{n} of layers.{L} from the current input [heads, tokens, head_dim]",
                           lazy=True, cost=qkv_cost)
        end = s.input_pos
    else:
        end = s.input_pos + T
        out["attn_out"] = Entry(lambda: acts["attn_out"], point == ATTN, f"output of {f'layers.{L}.attn'} [tokens, dim]")
        out["q"] = Entry(lambda: acts["q"], False, f"queries of layers.{L} after RoPE [heads, tokens, head_dim]")
        out["k"] = Entry(lambda: kv[L, 0, :, s.input_pos:end], False, f"keys of this pass, layers.{L} [kv_heads, tokens, head_dim]")
        out["v"] = Entry(lambda: kv[L, 1, :, s.input_pos:end], False, f"values of this pass, layers.{L} [kv_heads, tokens, head_dim]")
    if point == MLP:
        out["mlp_out"] = Entry(lambda: acts["mlp_out"], True, f"output of layers.{L}.mlp [tokens, dim]")
    out["k_cache"] = Entry(lambda: kv[L, 0, :, :end], False, f"KV cache keys of layers.{L}, positions 0..{end - 1}")
    out["v_cache"] = Entry(lambda: kv[L, 1, :, :end], False, f"KV cache values of layers.{L}, positions 0..{end - 1}")
    def logits():
        with torch.no_grad():
            return model.logits(acts["hidden"])
    out["logits"] = Entry(logits, False,
                          f"logit lens at {mod}: lm_head(norm(hidden)) [tokens, vocab], fp32", lazy=True,
                          cost=T * a.dim + (a.dim + T) * a.vocab_size)
    out["tokens"] = Entry(lambda: s.pass_tokens, False, "input tokens of this pass")
    for name, t in s.results.items():
        out[name] = Entry(lambda t=t: t, False, "evaluation result (a host copy)")
    return out


def expression_env(engine: Engine, s: Session) -> dict:
    """Names for Evaluate and breakpoint conditions: lazy tensors plus the position scalars."""
    env: dict = {name: Lazy(e.get, e.cost) for name, e in catalog(engine, s).items()}
    for name, t in s.results.items():  # back on the device only if the expression uses it
        env[name] = Lazy(lambda t=t: t.to(engine.device), t.numel())
    env.update(scalars(s))
    return env
