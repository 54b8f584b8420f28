"""Runs forward passes one stop point at a time, for one session or a batch of them.

Between two stop points the engine executes exactly one piece of the model: a layer's
attention, its MLP, or the residual add that leads into the next layer (plus the head and
the next token's embedding at the end of a pass). The state needed to go on is the
session's KV buffer and a few saved activations, so a session can stop at any point,
be swapped out, come back, and continue with the same numbers as an uninterrupted run.

A prefill runs alone on its prompt's rows (the same row-wise kernels as a decode block where
those run: pieces.prefill_attention / prefill_mlp). Decode passes run as blocks of `batch_rows` rows
(runtime/pieces.py): sessions at the same stop point share one block, each reading its own KV;
a session alone fills one row of a block of the same size, so its numbers are the same either
way. While a session is on the worker its activations may be views of the block's registers;
`settle` copies them out before it leaves (a stop, the end of its turn).
"""
from __future__ import annotations

import threading

import torch

from ..kernels import hostcopy
from ..model.llama import Llama, rope_tables
from .pieces import make_pieces
from .session import ATTN, FINISHED, LAYER, MLP, Session
from .span import pieces_to_next_check


class Engine:
    def __init__(self, model: Llama, tokenizer, device: torch.device, dtype: torch.dtype, max_context: int,
                 batch_rows: int = 1, graphs: bool = True):
        self.model = model
        self.args = model.args
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.max_context = max_context
        self.cos, self.sin = rope_tables(self.args, max_context, device, dtype)
        for layer in model.layers:            # fused q/k/v and gate/up weights, made once here
            layer.self_attn.wqkv, layer.mlp.w13
        self.batch_rows = max(1, int(batch_rows))
        self.pieces = make_pieces(model, self.batch_rows, self.cos, self.sin, graphs)
        # Held by the worker for a whole turn, and by `reference`: a block's registers carry a
        # batch's state from one piece to the next, so no other thread may run pieces meanwhile.
        self.lock = threading.RLock()
        # tokens up and logits down by kernel where it can (kernels/hostcopy.py): never behind a swap's copy
        self._staging = hostcopy.Staging(device) if hostcopy.available(device) else None
        self._readback = hostcopy.Readback(device) if self._staging is not None else None

    def _upload_tokens(self, tokens: list[int]) -> torch.Tensor:
        cpu = torch.tensor(tokens, dtype=torch.long)
        if self._staging is None:
            return cpu.to(self.device)
        return self._staging.upload(cpu, torch.empty(len(tokens), dtype=torch.long, device=self.device))

    def _to_cpu(self, t: torch.Tensor) -> torch.Tensor:
        """A pass's logits on the CPU (the one sync of a pass)."""
        return t.cpu() if self._readback is None else self._readback.read(t)

    def rope(self, s: Session):
        T = s.pass_tokens.shape[0]
        return self.cos[s.input_pos:s.input_pos + T], self.sin[s.input_pos:s.input_pos + T]

    @torch.no_grad()
    def begin(self, s: Session) -> None:
        """Starts the prefill: embed the prompt; the session is then at layers.0 (before it)."""
        s.pass_tokens = self._upload_tokens(s.prompt_tokens)
        s.input_pos, s.pass_index, s.layer, s.point = 0, 0, 0, LAYER
        s.memory.acts = {"hidden": self.model.embed_tokens(s.pass_tokens)}
        s.started = True

    def batchable(self, s: Session) -> bool:
        """Decode passes run in blocks; a prefill runs alone on its own rows."""
        return s.pass_index > 0 and s.pass_tokens is not None and s.pass_tokens.shape[0] == 1

    def advance_span(self, group: list[Session], pieces: int) -> list[int | None]:
        """Up to `pieces` pieces for `group` without stopping between them (runtime/span.py says
        how many may run unchecked); fewer when a pass ends first. Returns as advance_batch."""
        s0, P = group[0], self.pieces
        if (P.whole_pass and pieces >= 3 * self.args.n_layers and s0.layer == 0 and s0.point == LAYER
                and self.batchable(s0) and len(group) <= self.batch_rows):
            x = P.gather([s.memory.acts["hidden"] for s in group], "hidden")
            logits = P.run_pass(x, [(s.memory.kv, s.input_pos) for s in group])
            return self._end_passes(group, self._to_cpu(logits[:len(group)]))
        for _ in range(pieces - 1):
            tokens = self.advance_batch(group)
            if any(t is not None for t in tokens):
                return tokens
        return self.advance_batch(group)

    def advance(self, s: Session) -> int | None:
        """Moves the session to its next stop point. Returns the token when a pass ended."""
        return self.advance_batch([s])[0]

    @torch.no_grad()
    def advance_batch(self, group: list[Session]) -> list[int | None]:
        """One piece for every session of `group` (all at the same layer and point; several only
        for decode passes). Returns each one's token where its pass ended, else None."""
        s0 = group[0]
        if not self.batchable(s0):
            assert len(group) == 1, "a prefill runs alone"
            return [self._advance_alone(s0)]
        if len(group) <= self.batch_rows:
            return self._advance_block(group)
        out: list[int | None] = []
        for i in range(0, len(group), self.batch_rows):   # blocks share one set of registers:
            block = group[i:i + self.batch_rows]           # each settles before the next one runs
            out += self._advance_block(block)
            for s in block:
                self.settle(s)
        return out

    # -------------------------------------------------------------- a prefill, alone
    def _advance_alone(self, s: Session) -> int | None:
        acts, P = s.memory.acts, self.pieces
        if s.point == LAYER:   # fused row-wise kernels where block attention runs (runtime/pieces.py)
            c, sn = self.rope(s)
            out, rows = P.prefill_attention(s.layer, acts["hidden"], s.memory.kv, s.input_pos, c, sn)
            acts["attn_out"], acts["q"] = out, rows[:, :self.args.n_heads].transpose(0, 1)
            s.point = ATTN
            return None
        if s.point == ATTN:
            acts["hidden"], acts["mlp_out"] = P.prefill_mlp(s.layer, acts["hidden"], acts["attn_out"])
            s.point = MLP
            return None
        assert s.point == MLP
        x = acts["hidden"] + acts["mlp_out"]
        if s.layer + 1 < self.args.n_layers:
            s.memory.acts = {"hidden": x}
            s.layer, s.point = s.layer + 1, LAYER
            return None
        logits = self.model.logits(x[-1:])[0]
        return self._end_passes([s], self._to_cpu(logits[None]))[0]

    # -------------------------------------------------------------- decode blocks
    def _advance_block(self, group: list[Session]) -> list[int | None]:
        P, n = self.pieces, len(group)
        L, point = group[0].layer, group[0].point
        acts = [s.memory.acts for s in group]
        if point == LAYER:
            x = P.gather([a["hidden"] for a in acts], "hidden")
            # each session's own KV: its K/V written at its position, attended in place
            qkv, a = P.attention(L, x, [(s.memory.kv, s.input_pos) for s in group])
            H = self.args.n_heads
            for i, s in enumerate(group):
                s.memory.acts = {"hidden": x[i:i + 1], "attn_out": a[i:i + 1], "q": qkv[i:i + 1, :H].transpose(0, 1)}
                s.point = ATTN
            return [None] * n
        if point == ATTN:
            h, m = P.mlp(L, P.gather([a["hidden"] for a in acts], "hidden"), P.gather([a["attn_out"] for a in acts], "attn_out"))
            for i, s in enumerate(group):
                s.memory.acts = {"hidden": h[i:i + 1], "mlp_out": m[i:i + 1], "attn_out": acts[i]["attn_out"], "q": acts[i]["q"]}
                s.point = MLP
            return [None] * n
        assert point == MLP
        x = P.res(P.gather([a["hidden"] for a in acts], "h"), P.gather([a["mlp_out"] for a in acts], "mlp_out"))
        if L + 1 < self.args.n_layers:
            for i, s in enumerate(group):
                s.memory.acts = {"hidden": x[i:i + 1]}
                s.layer, s.point = L + 1, LAYER
            return [None] * n
        return self._end_passes(group, self._to_cpu(P.head(x)[:n]))   # the one sync of a pass

    def _end_passes(self, group: list[Session], logits: torch.Tensor) -> list[int]:
        """Greedy tokens from each session's last-row logits (fp32, on the CPU, one per session);
        the next pass's embeddings, or FINISHED."""
        tokens, going = [], []
        for i, s in enumerate(group):
            s.last_logits = logits[i].clone()    # kept for checks
            token = int(s.last_logits.argmax())  # greedy
            tokens.append(token)
            s.generated.append(token)
            s.text = self.tokenizer.decode(s.generated)
            if len(s.generated) >= s.max_new_tokens:
                s.state = FINISHED
                s.memory.acts = {}
            else:
                going.append((s, token))
        if going:
            ids = self._upload_tokens([t for _, t in going])
            emb = self.model.embed_tokens(ids)
            for i, (s, token) in enumerate(going):
                s.input_pos += s.pass_tokens.shape[0]
                s.pass_index += 1
                s.pass_tokens = ids[i:i + 1]
                s.memory.acts = {"hidden": emb[i:i + 1]}
                s.layer, s.point = 0, LAYER
        return tokens

    def settle(self, s: Session) -> None:
        """Before s leaves the worker: its activations get storage of their own (not the block's
        registers, which the next piece of any session overwrites)."""
        owns = self.pieces.owns
        for name, t in list(s.memory.acts.items()):
            if owns(t):
                s.memory.acts[name] = t.clone(memory_format=torch.contiguous_format)

    def scratch_session(self, prompt_tokens: list[int], max_new_tokens: int, context: int | None = None) -> Session:
        """A runnable session outside any scheduler, its zeroed KV on the device (no host region):
        for references, benchmarks and tests."""
        from .session import RUNNING
        from .swap import DEVICE, SessionMemory

        a = self.args
        context = context or len(prompt_tokens) + max_new_tokens
        mem = SessionMemory((a.n_layers, 2, a.n_kv_heads, context, a.head_dim), self.dtype, 0)
        mem.kv = torch.zeros(mem.kv_shape, dtype=self.dtype, device=self.device)
        mem.location = DEVICE
        s = Session(list(prompt_tokens), max_new_tokens, context, mem)
        s.state = RUNNING
        return s

    @torch.no_grad()
    def reference(self, prompt_tokens: list[int], max_new_tokens: int, with_logits: bool = False):
        """Uninterrupted greedy generation, for checks: the same kernels, no stops, no swaps.
        It holds the engine's lock: the worker waits meanwhile."""
        s = self.scratch_session(prompt_tokens, max_new_tokens)
        with self.lock:
            self.begin(s)
            while s.state != FINISHED:   # in spans, as the worker runs a session without breakpoints
                self.advance_span([s], pieces_to_next_check([s], self.args.n_layers))
        return (s.generated, s.last_logits) if with_logits else s.generated
