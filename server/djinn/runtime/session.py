"""A debugging session: one prompt's generation, as a state machine.

created -> running -> paused(layer, point, token) -> running ... -> finished; or closed / failed.
Where it is inside the forward pass is `cursor`: the stop point it has reached. The engine
moves it from one stop point to the next; nothing before the cursor is ever recomputed.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch

from .swap import SessionMemory

CREATED, RUNNING, PAUSED, FINISHED, CLOSED, FAILED = "created", "running", "paused", "finished", "closed", "failed"

# Stop points inside a layer, in execution order.
LAYER, ATTN, MLP = "layer", "attn", "mlp"
POINTS = (LAYER, ATTN, MLP)

_ids = itertools.count(1)


@dataclass
class BreakpointSpec:
    id: int
    layer: int
    point: str = LAYER
    condition: str = ""
    hit_condition: str = ""
    hits: int = 0
    log_message: str = ""        # a logpoint: print this (its {expression} parts evaluated), never stop


@dataclass
class DataBreakpointSpec:
    """Stop where `condition` (over `tensor`) becomes true; checked at every stop point where
    every tensor it uses exists."""
    id: int
    tensor: str
    condition: str
    hit_condition: str = ""
    hits: int = 0                # times the condition became true
    last: str = ""               # "true", "false" or "error" at the last stop point it was checked
    tensors: frozenset = frozenset()   # the catalog names the condition reads (set when validated)

    def key(self) -> tuple:
        return self.id, self.tensor, self.condition, self.hit_condition


@dataclass
class TrapSpec:
    nan: bool = False
    inf: bool = False
    norm_spike: float = 0.0


@dataclass(eq=False)   # identity: a session equals only itself (fields hold tensors)
class Session:
    prompt_tokens: list[int]
    max_new_tokens: int
    context: int
    memory: SessionMemory
    prompt: str = ""
    label: str = ""
    stop_on_entry: bool = False
    # Breakpoints per client: (user, client id) -> that client's set. A stop checks them all.
    breakpoints: dict[tuple[str, str], list[BreakpointSpec]] = field(default_factory=dict)
    traps: TrapSpec = field(default_factory=TrapSpec)       # what every client asked for, merged
    client_traps: dict = field(default_factory=dict)         # (user, client) -> TrapSpec
    data_breakpoints: dict = field(default_factory=dict)     # (user, client) -> [DataBreakpointSpec]
    owner: str = ""                        # the user who created it
    creator: tuple[str, str] = ("", "")    # (user, client id) that created it
    id: int = field(default_factory=lambda: next(_ids))
    state: str = CREATED
    created_at: float = field(default_factory=time.time)

    # Where the forward pass is. started=False: nothing computed yet.
    started: bool = False
    pass_index: int = 0          # 0 = prefill, k = k-th decode pass
    input_pos: int = 0
    pass_tokens: torch.Tensor | None = None
    layer: int = 0
    point: str = LAYER
    prev_norm: float = 0.0       # ||hidden|| at the last layer input (norm-spike trap)

    generated: list[int] = field(default_factory=list)
    last_logits: torch.Tensor | None = None   # fp32 [vocab] of the last pass, on the CPU
    text: str = ""

    # Control
    step_kind: str = ""          # "", "sublayer", "layer", "token"
    step_from_pass: int = 0
    pause_requested: bool = False
    stop_reason: str = ""
    hit_ids: list[tuple[tuple[str, str], int]] = field(default_factory=list)   # (client, breakpoint id)
    paused_at: float = 0.0       # for least-recently-paused eviction
    last_run: float = 0.0
    turn: int = 0                # the scheduler's turn number when it last ran (fair turns)
    ready_at: float = 0.0        # when it last became runnable or ended a turn still runnable
    error: str = ""
    results: dict = field(default_factory=dict)   # "$N" -> tensors from Evaluate, dropped on resume
    result_counter: int = 0
    waiting: bool = False
    history: object = None       # time travel: runtime/history.History of the current pass, or None

    # Leases: the clients holding it (created, listed or touched it); when none is connected the
    # session is kept until lease_expires_at, then closed. Finished ones retire after a grace.
    holders: set = field(default_factory=set)
    touched: float = field(default_factory=time.monotonic)
    ended_at: float = 0.0
    lease_expires_at: float = 0.0          # unix seconds; 0 = held

    # Swap statistics (measured)
    swap_outs: int = 0
    swap_ins: int = 0
    last_swap_out_ms: float = 0.0
    last_swap_in_ms: float = 0.0

    @property
    def phase(self) -> str:
        return "prefill" if self.pass_index == 0 else "decode"

    @property
    def alive(self) -> bool:
        return self.state in (CREATED, RUNNING, PAUSED)

    def module_name(self) -> str:
        base = f"layers.{self.layer}"
        return base if self.point == LAYER else f"{base}.{self.point}"
