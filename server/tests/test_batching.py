"""Decode blocks: sessions at one stop point share a block, each with its own numbers.

- a session's results are bit-identical alone or batched with others (its row of a block of the
  same size), on the CPU and on CUDA;
- on CUDA the graphed pieces give exactly what the eager pieces give;
- through the server: sessions generating together are batched, a session that stops leaves the
  batch while the others finish, and every output equals its uninterrupted reference.
"""
import random

import pytest
import torch

from djinn.model.build import build_model
from djinn.runtime.engine import Engine
from djinn.runtime.session import ATTN, FINISHED, LAYER, MLP
from djinn.v1 import djinn_pb2 as pb
from harness import running_server

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graphs are CUDA-only)")


def prompt(seed, n):
    r = random.Random(seed)
    return [r.randrange(3, 500) for _ in range(n)]


def _model(device):
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model, tok, _ = build_model("tiny-40l", dev, dtype, seed=3)
    return model, tok, dev, dtype


def _session(eng, toks, new, ctx=96):
    return eng.scratch_session(toks, new, ctx)


def _trace(eng, sessions, batched):
    """Prefills alone, then decode passes piece by piece (batched or one by one); records every
    session's fresh activation after every piece, and its final logits."""
    for s in sessions:
        eng.begin(s)
        while s.pass_index == 0:
            eng.advance(s)
        eng.settle(s)
    seen = {id(s): [] for s in sessions}
    while any(s.state != FINISHED for s in sessions):
        live = [s for s in sessions if s.state != FINISHED]
        if batched:
            eng.advance_batch(live)
        else:
            for s in live:       # one at a time, as turns: a session leaving the worker settles
                eng.advance(s)   # (its activations leave the block's registers)
                eng.settle(s)
        for s in live:
            if s.state != FINISHED:
                name = {LAYER: "hidden", ATTN: "attn_out", MLP: "mlp_out"}[s.point]
                seen[id(s)].append(s.memory.acts[name].float().cpu().clone())
    return [(s.generated, seen[id(s)], s.last_logits) for s in sessions]


def _same(a, b):
    (ga, ta, la), (gb, tb, lb) = a, b
    assert ga == gb
    assert len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb))
    assert torch.equal(la, lb)


@pytest.mark.parametrize("device", DEVICES)
def test_a_session_batched_with_others_gives_its_numbers_alone_bit_for_bit(device):
    model, tok, dev, dtype = _model(device)
    eng = Engine(model, tok, dev, dtype, 128, batch_rows=4)
    prompts = [prompt(i, 6 + 3 * i) for i in range(3)]          # different lengths: different positions
    alone = _trace(eng, [_session(eng, p, 5) for p in prompts], batched=False)
    together = _trace(eng, [_session(eng, p, 5) for p in prompts], batched=True)
    for a, b in zip(alone, together):
        _same(a, b)
    # more sessions than one block holds: two blocks, the same numbers
    more = [prompt(10 + i, 5 + i) for i in range(6)]
    _ = [_same(a, b) for a, b in zip(_trace(eng, [_session(eng, p, 3) for p in more], batched=False),
                                     _trace(eng, [_session(eng, p, 3) for p in more], batched=True))]


@cuda_only
def test_graphed_pieces_give_exactly_what_the_eager_pieces_give():
    model, tok, dev, dtype = _model("cuda")
    graphed = Engine(model, tok, dev, dtype, 128, batch_rows=4, graphs=True)
    eager = Engine(model, tok, dev, dtype, 128, batch_rows=4, graphs=False)
    assert graphed.pieces.graphed and not eager.pieces.graphed and graphed.pieces.nbytes > 0
    prompts = [prompt(20 + i, 7 + 2 * i) for i in range(3)]
    for batched in (False, True):
        g = _trace(graphed, [_session(graphed, p, 6) for p in prompts], batched)
        e = _trace(eager, [_session(eager, p, 6) for p in prompts], batched)
        for a, b in zip(g, e):
            _same(a, b)
    assert graphed.reference(prompts[0], 6) == eager.reference(prompts[0], 6)


def _server_kw(device):
    return dict(device=device, batch_rows=4, **({"host_pool_gb": 1.0, "budget": "4"} if device == "cuda" else {}))


@pytest.mark.parametrize("device", DEVICES)
def test_sessions_generating_together_are_batched_and_one_that_stops_leaves_the_batch(device):
    with running_server(**_server_kw(device)) as (c, st):
        prompts = [prompt(30 + i, 12) for i in range(4)]
        refs = [st.engine.reference(p, 8) for p in prompts]
        # session 0 stops at layers.10 of its third decode pass (the hit count counts passes). The
        # worker waits for the engine's lock meanwhile, so all four exist before any runs (on CUDA
        # a tiny model's prefill and passes are quicker than a CreateSession round trip)
        with st.engine.lock:
            stopper = c.CreateSession(pb.CreateSessionRequest(
                prompt_tokens=prompts[0], max_new_tokens=8,
                breakpoints=[pb.Breakpoint(id=1, layer=10, hit_condition="== 4")]))
            others = [c.create(p, max_new=8).id for p in prompts[1:]]
        ev = c.wait(pb.EVENT_KIND_STOPPED, stopper.id)
        assert ev.session.position.token_index == 3 and ev.session.position.layer == 10
        finished = {}
        for sid in others:   # they finish while session 0 stays paused: it left the batch, they went on
            finished[sid] = list(c.wait(pb.EVENT_KIND_FINISHED, sid, timeout=120).session.generated_tokens)
        info = c.GetSession(pb.SessionRef(session_id=stopper.id))
        assert info.state == pb.SESSION_STATE_PAUSED
        c.Continue(pb.SessionRef(session_id=stopper.id))
        done = c.wait(pb.EVENT_KIND_FINISHED, stopper.id, timeout=120)
        assert list(done.session.generated_tokens) == refs[0]
        assert [finished[sid] for sid in others] == refs[1:]
        assert st.scheduler.batched["pieces"] > 0 and st.scheduler.batched["rows"] >= 2 * st.scheduler.batched["pieces"]


@cuda_only
def test_a_whole_pass_in_one_graph_gives_what_the_pieces_give():
    """Spans with no stop in them run a whole decode pass as one graph: the same tokens and
    logits, bit for bit, as piece by piece (alone and batched)."""
    model, tok, dev, dtype = _model("cuda")
    eng = Engine(model, tok, dev, dtype, 128, batch_rows=4, graphs=True)
    assert eng.pieces.whole_pass
    prompts = [prompt(60 + i, 6 + 3 * i) for i in range(3)]
    by_piece = _trace(eng, [_session(eng, p, 6) for p in prompts], batched=True)
    alone = [[_session(eng, p, 6)] for p in prompts]      # each session in its own block
    together = [[_session(eng, p, 6) for p in prompts]]   # all three in one
    for blocks in (alone, together):
        for sessions in blocks:
            for s in sessions:
                eng.begin(s)
                while s.pass_index == 0:
                    eng.advance(s)
                eng.settle(s)
            while any(s.state != FINISHED for s in sessions):
                live = [s for s in sessions if s.state != FINISHED]
                eng.advance_span(live, 3 * eng.args.n_layers)
                for s in live:
                    eng.settle(s)
        for s, (generated, _, logits) in zip([s for b in blocks for s in b], by_piece):
            assert s.generated == generated
            assert torch.equal(s.last_logits, logits)


@pytest.mark.parametrize("device", DEVICES)
def test_stopped_and_swapped_at_every_breakpoint_equals_the_uninterrupted_run(device):
    """With blocks (and graphs on CUDA): stops at every breakpoint of every pass, each followed by
    a swap-out (eager policy) and a read that brings the session back, give the reference's tokens
    and logits bit for bit, while two other sessions generate beside it."""
    with running_server(swap_policy="eager", **_server_kw(device)) as (c, st):
        toks = prompt(41, 20)
        ref_tokens, ref_logits = st.engine.reference(toks, 5, with_logits=True)
        side = [c.create(prompt(50 + i, 9), max_new=12).id for i in range(2)]
        s = c.create(toks, max_new=5, layers=(3, 17, 31))
        stops = 0
        while True:
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED), s.id, timeout=120)
            if ev.kind == pb.EVENT_KIND_FINISHED:
                break
            stops += 1
            c.wait(pb.EVENT_KIND_SWAP_OUT, s.id)
            next(iter(c.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden", summary_only=True))))
            c.Continue(pb.SessionRef(session_id=s.id))
        assert stops == 15
        assert list(ev.session.generated_tokens) == ref_tokens
        assert torch.equal(st.scheduler.sessions[s.id].last_logits, ref_logits)
        for sid in side:
            c.wait(pb.EVENT_KIND_FINISHED, sid, timeout=120)
