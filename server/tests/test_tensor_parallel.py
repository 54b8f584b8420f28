"""Tensor parallelism on the CPU: two gloo ranks (spawned processes) running tiny-4l in fp32.

TP=1 runs in the test process itself with the same scenario; the sharded run must give the
same tokens and logits (within fp32 tolerance: the all-reduce sums in another order), both
ranks must agree bit for bit and reach the same stop point after every piece, a write to the
replicated residual must land equally on both, and a dead or stuck rank must be reported
within a timeout instead of hanging the other.
"""
from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist

from djinn.model.build import build_model
from djinn.model.config import named_config
from djinn.parallel.activations import gather_heads, sharded_summary, write_heads, write_replicated
from djinn.parallel.launch import run_ranks
from djinn.parallel.mesh import RankMesh
from djinn.parallel.shard import random_sharded, shard_args, shard_llama
from djinn.runtime.engine import Engine
from djinn.runtime.session import ATTN, FINISHED, LAYER

CPU, F32 = torch.device("cpu"), torch.float32
PROMPT, NEW = [1, 2, 3, 4, 5, 6, 7], 5
STOP = (1, 2, LAYER)        # the first decode pass, before layers.2
Q_AT = (1, 2, ATTN)         # where that layer's queries exist
STEER = 0.5                 # added to the residual at STOP


def _engine(rm: RankMesh) -> Engine:
    net, tok, _ = build_model("tiny-4l", CPU, F32, seed=0)
    return Engine(shard_llama(net, rm), tok, CPU, F32, 64, graphs=False)


def _same_on_all(rm: RankMesh, obj) -> bool:
    if rm.world == 1:
        return True
    seen = [None] * rm.world
    dist.all_gather_object(seen, obj, group=rm.group)
    return all(o == seen[0] for o in seen)


def scenario(rm: RankMesh, steer: bool) -> dict:
    """A greedy generation one piece at a time, as the worker runs one with breakpoints;
    stops at STOP, where it may write the residual (from the leader), then runs to the end."""
    eng = _engine(rm)
    s = eng.scratch_session(PROMPT, NEW)
    eng.begin(s)
    out = dict(trace=[], agree=True)
    while s.state != FINISHED:
        eng.advance(s)
        where = ("done",) if s.state == FINISHED else (s.pass_index, s.layer, s.point)
        out["trace"].append(where)
        out["agree"] &= _same_on_all(rm, where)    # both ranks at the same stop point
        if where == STOP:
            h = s.memory.acts["hidden"]
            out["hidden_at_stop"] = h.clone()
            out["kv_at_stop"] = gather_heads(s.memory.kv[:, :, :, :s.input_pos + 1], 2, rm).clone()
            if steer:
                write_replicated(h, h + STEER if rm.leader else None, rm)
                out["hidden_after_write"] = s.memory.acts["hidden"].clone()
        if where == Q_AT:
            out["q"] = gather_heads(s.memory.acts["q"], 0, rm).clone()
    out["tokens"], out["logits"] = list(s.generated), s.last_logits.clone()
    return out


def both_scenarios(rm: RankMesh) -> dict:
    eng = _engine(rm)
    ref_tokens, ref_logits = eng.reference(PROMPT, NEW, with_logits=True)
    return dict(plain=scenario(rm, False), steered=scenario(rm, True), reference=(ref_tokens, ref_logits),
                local_heads=(eng.args.n_heads, eng.args.n_kv_heads, eng.args.head_dim))


SOLO = RankMesh(0, 1, CPU, None, None, None)


@pytest.fixture(scope="module")
def runs():
    t0 = time.monotonic()
    ranks = run_ranks(both_scenarios, 2, timeout_s=120)
    for r in ranks:
        assert r.ok, f"rank {r.rank}: exit {r.exitcode}\n{r.error}"
    return [r.value for r in ranks], both_scenarios(SOLO), time.monotonic() - t0


def test_tp2_equals_tp1_greedy(runs):
    (r0, r1), solo, _ = runs
    assert r0["local_heads"] == (2, 1, 16)              # 4 heads / 2 KV heads split, head_dim kept
    for case in ("plain", "steered"):
        assert r0[case]["tokens"] == solo[case]["tokens"], case
        torch.testing.assert_close(r0[case]["logits"], solo[case]["logits"], atol=1e-5, rtol=1e-5)
    assert r0["reference"][0] == solo["reference"][0] == solo["plain"]["tokens"]
    torch.testing.assert_close(r0["reference"][1], solo["reference"][1], atol=1e-5, rtol=1e-5)
    # the ranks hold one replicated result, bit for bit
    for case in ("plain", "steered"):
        assert r0[case]["tokens"] == r1[case]["tokens"]
        assert torch.equal(r0[case]["logits"], r1[case]["logits"])


def test_every_rank_reaches_every_stop_point(runs):
    (r0, r1), solo, _ = runs
    assert r0["plain"]["agree"] and r1["plain"]["agree"] and r0["steered"]["agree"]
    assert r0["plain"]["trace"] == r1["plain"]["trace"] == solo["plain"]["trace"]
    assert STOP in r0["plain"]["trace"] and r0["plain"]["trace"][-1] == ("done",)
    assert len(r0["plain"]["trace"]) == NEW * 3 * 4        # 3 pieces a layer, 4 layers, each pass
    # at the stop, the shards gathered are the whole tensors of the unsharded run
    torch.testing.assert_close(r0["plain"]["hidden_at_stop"], solo["plain"]["hidden_at_stop"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r0["plain"]["kv_at_stop"], solo["plain"]["kv_at_stop"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r1["plain"]["q"], solo["plain"]["q"], atol=1e-5, rtol=1e-5)
    assert r0["plain"]["q"].shape == (4, 1, 16)


def test_write_to_replicated_residual_lands_on_both_ranks(runs):
    (r0, r1), solo, _ = runs
    a, b = r0["steered"], r1["steered"]
    assert torch.equal(a["hidden_after_write"], b["hidden_after_write"])   # rank 1 got rank 0's value
    assert torch.equal(a["hidden_after_write"], a["hidden_at_stop"] + STEER)
    assert (a["logits"] - r0["plain"]["logits"]).abs().max() > 1e-3        # the write had an effect
    torch.testing.assert_close(a["logits"], solo["steered"]["logits"], atol=1e-5, rtol=1e-5)


def test_heads_not_divisible_are_refused():
    with pytest.raises(ValueError, match=r"--tp 4: n_kv_heads=2 not divisible by 4"):
        shard_args(named_config("tiny-4l"), 4, 0)


def rank_one_dies(rm: RankMesh) -> dict:
    eng = _engine(rm)
    s = eng.scratch_session(PROMPT, NEW)
    eng.begin(s)
    eng.advance(s)         # one piece with its all-reduce, on both ranks
    rm.alive(timeout_s=30)
    if rm.rank == 1:
        os._exit(3)        # no clean-up, no goodbye: as a crashed or OOM-killed rank
    out, t0 = {}, time.monotonic()
    try:
        time.sleep(0.5)
        rm.alive(timeout_s=5)
    except RuntimeError as e:
        out["health"] = str(e)
    out["health_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    try:
        while s.state != FINISHED:
            eng.advance(s)
    except Exception as e:   # gloo's error from the all-reduce whose peer is gone
        out["advance"] = f"{type(e).__name__}: {e}"
    out["advance_s"] = time.monotonic() - t0
    return out


def test_dead_rank_is_noticed_not_hung():
    ranks = run_ranks(rank_one_dies, 2, timeout_s=60, collective_timeout_s=20)
    r0, r1 = ranks
    assert r1.exitcode == 3 and r1.value is None
    assert r0.ok, r0.error
    assert "health" in r0.value and r0.value["health_s"] < 10, r0.value
    assert "advance" in r0.value and r0.value["advance_s"] < 20, r0.value


def rank_one_stuck(rm: RankMesh) -> dict:
    if rm.rank == 1:
        time.sleep(6)          # alive but not answering (a long stall, a deadlock)
    t0 = time.monotonic()
    try:
        rm.alive(timeout_s=2)
        return dict(error=None, seconds=time.monotonic() - t0)
    except RuntimeError as e:
        return dict(error=str(e), seconds=time.monotonic() - t0)


def test_stuck_rank_is_named_by_the_health_check():
    r0, r1 = run_ranks(rank_one_stuck, 2, timeout_s=60)
    assert r0.ok, r0.error
    assert "Ranks 1 failed to pass monitoredBarrier" in (r0.value["error"] or ""), r0.value
    assert r0.value["seconds"] < 5, r0.value


class Executor:
    """What every rank does with a command: the model work of the scheduler, per rank."""

    def __init__(self, rm: RankMesh):
        self.rm, self.eng, self.sessions = rm, _engine(rm), {}

    def __call__(self, cmd: tuple):
        op, sid = cmd[0], cmd[1]
        if op == "create":
            s = self.sessions[sid] = self.eng.scratch_session(cmd[2], cmd[3])
            self.eng.begin(s)
        elif op == "advance":
            self.eng.advance(self.sessions[sid])
        elif op == "span":     # several pieces for one command: what the worker runs between checks
            self.eng.advance_span([self.sessions[sid]], cmd[2])
        elif op == "write":    # the value travels in the command: the leader's, on every rank
            self.sessions[sid].memory.acts[cmd[2]].copy_(cmd[3])
        s = self.sessions[sid]
        return ("done",) if s.state == FINISHED else (s.pass_index, s.layer, s.point)


def leader_script(rm: RankMesh, execute) -> list:
    """Two sessions interleaved as the scheduler would: A stops at STOP, B runs meanwhile,
    the residual of A is steered, then both run to the end."""
    from djinn.parallel.follow import QUIT, lead

    send = (lambda cmd: lead(rm, cmd, execute)) if rm.world > 1 else execute
    send(("create", "A", PROMPT, NEW))
    send(("create", "B", [9, 8, 7], 3))
    while send(("advance", "A")) != STOP:
        pass
    while send(("span", "B", 5)) != ("done",):
        pass
    h = execute.sessions["A"].memory.acts["hidden"]
    send(("write", "A", "hidden", h + STEER))
    while send(("advance", "A")) != ("done",):
        pass
    if rm.world > 1:
        lead(rm, QUIT, execute)
    return [(k, list(s.generated), s.last_logits) for k, s in sorted(execute.sessions.items())]


def leader_and_followers(rm: RankMesh) -> list:
    from djinn.parallel.follow import follow

    ex = Executor(rm)
    if rm.leader:
        return leader_script(rm, ex)
    follow(rm, ex)
    return [(k, list(s.generated), s.last_logits) for k, s in sorted(ex.sessions.items())]


def test_followers_execute_the_leaders_commands():
    r0, r1 = run_ranks(leader_and_followers, 2, timeout_s=120)
    assert r0.ok and r1.ok, (r0.error, r1.error)
    solo = leader_script(SOLO, Executor(SOLO))
    assert [k for k, *_ in r0.value] == ["A", "B"]
    for (k, toks0, lg0), (_, toks1, lg1), (_, toks, lg) in zip(r0.value, r1.value, solo):
        assert toks0 == toks1 == toks, k
        assert torch.equal(lg0, lg1)
        torch.testing.assert_close(lg0, lg, atol=1e-5, rtol=1e-5)


def sharded_reads_writes_and_biases(rm: RankMesh) -> dict:
    """At Q_AT: a summary of the sharded queries from reductions, a scattered write to them;
    then a Qwen2-style model (q/k/v biases, sharded with their heads) end to end."""
    from djinn.model.config import ModelArgs
    from djinn.model.llama import Llama, init_random_
    from djinn.model.tokenizer import tokenizer_for

    eng = _engine(rm)
    s = eng.scratch_session(PROMPT, NEW)
    eng.begin(s)
    while (s.pass_index, s.layer, s.point) != Q_AT:
        eng.advance(s)
    q = s.memory.acts["q"]
    out = dict(summary=sharded_summary(q, rm), whole=gather_heads(q, 0, rm).clone(), local_shape=tuple(q.shape))
    write_heads(q, 0, out["whole"] * -2 if rm.leader else None, rm)
    out["after"] = gather_heads(q, 0, rm).clone()
    args = ModelArgs(n_layers=2, dim=64, n_heads=4, n_kv_heads=2, intermediate_size=96, vocab_size=128,
                     max_context=64, attention_bias=True)
    with torch.device(CPU):
        net = Llama(args)
    init_random_(net, 7)
    biased = Engine(shard_llama(net.eval().requires_grad_(False), rm), tokenizer_for(None, 128), CPU, F32, 64, graphs=False)
    out["biased"] = biased.reference([3, 1, 4, 1, 5], 4, with_logits=True)
    made = Engine(random_sharded(named_config("tiny-4l"), rm, F32, seed=3), tokenizer_for(None, 300), CPU, F32, 64,
                  graphs=False)   # each rank made only its slice
    out["made_per_rank"] = made.reference(PROMPT, NEW, with_logits=True)
    return out


def test_summaries_scattered_writes_biases_and_per_rank_weights():
    r0, r1 = run_ranks(sharded_reads_writes_and_biases, 2, timeout_s=120)
    assert r0.ok and r1.ok, (r0.error, r1.error)
    solo = sharded_reads_writes_and_biases(SOLO)
    a, b = r0.value, r1.value
    assert a["local_shape"] == (2, 1, 16) and solo["local_shape"] == (4, 1, 16)
    whole = solo["whole"].double()
    want = dict(numel=whole.numel(), mean=float(whole.mean()), std=float(whole.std()),
                min=float(whole.min()), max=float(whole.max()), nan=0, inf=0)
    for k, v in want.items():
        assert a["summary"][k] == pytest.approx(v, abs=1e-5) and b["summary"][k] == a["summary"][k], k
    assert torch.equal(a["after"], a["whole"] * -2) and torch.equal(b["after"], a["after"])
    assert a["biased"][0] == b["biased"][0] == solo["biased"][0]
    torch.testing.assert_close(a["biased"][1], solo["biased"][1], atol=1e-5, rtol=1e-5)
    assert a["made_per_rank"][0] == b["made_per_rank"][0] == solo["made_per_rank"][0]
    assert torch.equal(a["made_per_rank"][1], b["made_per_rank"][1])
    torch.testing.assert_close(a["made_per_rank"][1], solo["made_per_rank"][1], atol=1e-5, rtol=1e-5)
