"""Runs a session's forward pass one stop point at a time.

Between two stop points the engine executes exactly one piece of the model: a layer's
attention, its MLP, or the residual add that leads into the next layer (plus the head and
the next token's embedding at the end of a pass). The state needed to go on is the
session's KV buffer and a few saved activations, so a session can stop at any point,
be swapped out, come back, and continue with the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import torch

from ..model.llama import Llama, attention_step, rope_tables
from .session import ATTN, FINISHED, LAYER, MLP, Session


class Engine:
    def __init__(self, model: Llama, tokenizer, device: torch.device, dtype: torch.dtype, max_context: int):
        self.model = model
        self.args = model.args
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.max_context = max_context
        self.cos, self.sin = rope_tables(self.args, max_context, device, dtype)

    def rope(self, s: Session):
        T = s.pass_tokens.shape[0]
        return self.cos[s.input_pos:s.input_pos + T], self.sin[s.input_pos:s.input_pos + T]

    @torch.no_grad()
    def begin(self, s: Session) -> None:
        """Starts the prefill: embed the prompt; the session is then at layers.0 (before it)."""
        s.pass_tokens = torch.tensor(s.prompt_tokens, dtype=torch.long, device=self.device)
        s.input_pos, s.pass_index, s.layer, s.point = 0, 0, 0, LAYER
        s.memory.acts = {"hidden": self.model.embed_tokens(s.pass_tokens)}
        s.started = True

    @torch.no_grad()
    def advance(self, s: Session) -> int | None:
        """Moves the session to its next stop point. Returns the token when a pass ended."""
        acts, kv = s.memory.acts, s.memory.kv
        layer = self.model.layers[s.layer]
        if s.point == LAYER:
            c, sn = self.rope(s)
            out, q, _, _ = attention_step(layer, acts["hidden"], kv[s.layer], s.input_pos, c, sn)
            acts["attn_out"], acts["q"] = out, q
            s.point = ATTN
            return None
        if s.point == ATTN:
            h = acts["hidden"] + acts["attn_out"]
            acts["hidden"], acts["mlp_out"] = h, layer.mlp(layer.post_attention_layernorm(h))
            s.point = MLP
            return None
        assert s.point == MLP
        x = acts["hidden"] + acts["mlp_out"]
        if s.layer + 1 < self.args.n_layers:
            s.memory.acts = {"hidden": x}
            s.layer, s.point = s.layer + 1, LAYER
            return None
        return self._finish_pass(s, x)

    def _finish_pass(self, s: Session, x: torch.Tensor) -> int:
        logits = self.model.logits(x[-1:])[0]
        s.last_logits = logits.cpu()          # kept for checks; the one sync of a pass
        token = int(s.last_logits.argmax())   # greedy
        s.generated.append(token)
        s.text = self.tokenizer.decode(s.generated)
        if len(s.generated) >= s.max_new_tokens:
            s.state = FINISHED
            s.memory.acts = {}
            return token
        s.input_pos += s.pass_tokens.shape[0]
        s.pass_index += 1
        s.pass_tokens = torch.tensor([token], dtype=torch.long, device=self.device)
        s.memory.acts = {"hidden": self.model.embed_tokens(s.pass_tokens)}
        s.layer, s.point = 0, LAYER
        return token

    @torch.no_grad()
    def reference(self, prompt_tokens: list[int], max_new_tokens: int, with_logits: bool = False):
        """Uninterrupted greedy generation, for checks: the same kernels, no stops, no swaps."""
        from .swap import SessionMemory

        a = self.args
        context = len(prompt_tokens) + max_new_tokens
        mem = SessionMemory((a.n_layers, 2, a.n_kv_heads, context, a.head_dim), self.dtype, 0)
        mem.kv = torch.zeros(mem.kv_shape, dtype=self.dtype, device=self.device)
        s = Session(list(prompt_tokens), max_new_tokens, context, mem)
        self.begin(s)
        while s.state != FINISHED:
            self.advance(s)
        return (s.generated, s.last_logits) if with_logits else s.generated
