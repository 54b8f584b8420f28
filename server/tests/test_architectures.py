"""Llama 3.x (llama3 RoPE scaling), Mistral and Qwen2 (q/k/v biases), as HF folders and as GGUF
files, give transformers' numbers; anything else is refused with a message naming it."""
from __future__ import annotations

import functools
import json

import pytest
import torch

pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from djinn.model.build import build_model  # noqa: E402
from djinn.model.llama import rope_tables  # noqa: E402
from model_files import llama3_freq_factors, random_hf, write_gguf  # noqa: E402

CPU = torch.device("cpu")
TOL = 1e-4
KINDS = ["llama3", "mistral", "qwen2"]


def _ids(vocab: int, n: int = 20, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def _ours(net, args, ids, new: int = 5):
    """(prefill logits [T, V], greedy tokens), the engine's pattern: a prefill then single tokens."""
    kv = torch.zeros(args.n_layers, 2, args.n_kv_heads, 64, args.head_dim)
    cos, sin = rope_tables(args, 64, CPU, torch.float32)
    with torch.no_grad():
        first = net.forward_plain(ids, kv, 0, cos, sin)
        logits, out, pos = first, [], len(ids)
        for _ in range(new):
            out.append(int(logits[-1].argmax()))
            logits = net.forward_plain(torch.tensor([out[-1]]), kv, pos, cos, sin)
            pos += 1
    return first, out


def _reference(hf, ids, new: int = 5):
    with torch.no_grad():
        logits = hf(ids[None]).logits[0].float()
        gen = hf.generate(ids[None], max_new_tokens=new, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    return logits, gen


@functools.lru_cache(maxsize=None)
def _model(kind: str):
    over = {"tie_word_embeddings": True} if kind == "qwen2" else {}
    if kind == "mistral":
        over["sliding_window"] = 64
    hf, cfg = random_hf(kind, seed=KINDS.index(kind), **over)
    return kind, hf, cfg, _reference(hf, _ids(cfg.vocab_size))


@pytest.fixture(params=KINDS)
def model(request):
    return _model(request.param)


def test_hf_folder_parity(model, tmp_path):
    kind, hf, cfg, (ref_logits, ref_tokens) = model
    hf.save_pretrained(str(tmp_path))
    net, _, args = build_model(str(tmp_path), CPU, torch.float32)
    logits, tokens = _ours(net, args, _ids(cfg.vocab_size))
    assert ref_logits.abs().max() > 0.5
    diff = (logits - ref_logits).abs().max().item()
    assert diff < TOL, f"{kind}: prefill logits differ by {diff}"
    assert tokens == ref_tokens
    if kind == "qwen2":
        assert args.attention_bias and args.tie_embeddings
        assert net.layers[0].self_attn.q_proj.bias.abs().max() > 0.1
    if kind == "mistral":
        assert args.max_context == 64, "the sliding window caps the context"


def test_llama3_scaling_matters(tmp_path):
    """Without the llama3 rule the same weights give other numbers: the scaling is exercised."""
    _, hf, cfg, (ref_logits, _) = _model("llama3")
    hf.save_pretrained(str(tmp_path))
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    cfg_json["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg_json))
    net, _, args = build_model(str(tmp_path), CPU, torch.float32)
    assert args.rope_scaling is None
    logits, _ = _ours(net, args, _ids(cfg.vocab_size))
    assert (logits - ref_logits).abs().max().item() > 100 * TOL


def test_gguf_f32_parity(model, tmp_path):
    """The HF weights written as llama.cpp would (Q/K permuted for "llama"; Llama 3.1's scaling as
    rope_freqs), read back by our GGUF loader: transformers' numbers on the original weights."""
    kind, hf, cfg, (ref_logits, ref_tokens) = model
    path = tmp_path / f"{kind}.gguf"
    arch = "qwen2" if kind == "qwen2" else "llama"
    write_gguf(hf, cfg, path, arch, rope_freqs=llama3_freq_factors(cfg) if kind == "llama3" else None)
    net, tok, args = build_model(str(path), CPU, torch.float32)
    assert args.attention_bias == (kind == "qwen2")
    assert (args.rope_scaling is not None) == (kind == "llama3")
    assert args.max_context == (64 if kind == "mistral" else cfg.max_position_embeddings)
    logits, tokens = _ours(net, args, _ids(cfg.vocab_size))
    diff = (logits - ref_logits).abs().max().item()
    assert diff < TOL, f"{kind}: GGUF prefill logits differ by {diff}"
    assert tokens == ref_tokens


# ---- refusals name what is unsupported ----

def _folder(tmp_path, **change):
    hf, _ = random_hf("llama")
    hf.save_pretrained(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma2"}, "model_type is 'gemma2'; supported: llama, mistral, qwen2"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "type 'yarn' is not supported"),
    ({"attention_bias": True}, "attention_bias=true is not supported"),
    ({"hidden_act": "gelu_pytorch_tanh"}, "hidden_act 'gelu_pytorch_tanh'"),
])
def test_hf_refusals(tmp_path, change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(_folder(tmp_path, **change), CPU, torch.float32)


def test_gguf_refuses_other_architecture(tmp_path):
    hf, cfg = random_hf("llama")
    path = tmp_path / "phi.gguf"
    write_gguf(hf, cfg, path, "phi3")
    with pytest.raises(ValueError, match="architecture 'phi3' is not supported; supported: llama, qwen2"):
        build_model(str(path), CPU, torch.float32)


def test_gguf_refuses_unknown_tensor(tmp_path):
    """A llama file with q biases (not a llama.cpp llama) is refused, naming the tensor."""
    hf, cfg = random_hf("qwen2")
    path = tmp_path / "odd.gguf"
    write_gguf(hf, cfg, path, "llama")
    with pytest.raises(ValueError, match=r"not supported: blk\.0\.attn_k\.bias"):
        build_model(str(path), CPU, torch.float32)


def test_gguf_missing_or_garbage_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(str(tmp_path / "none.gguf"), CPU, torch.float32)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        build_model(str(bad), CPU, torch.float32)


@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
def test_server_engine_generates_transformers_tokens(kind, tmp_path):
    """The engine's own path (prefill pieces, decode blocks of --batch-rows rows, fused q/k/v
    weights and biases, scaled RoPE tables) over real gRPC, not just forward_plain."""
    from harness import running_server

    _, hf, cfg, (_, ref_tokens) = _model(kind)
    hf.save_pretrained(str(tmp_path))
    with running_server(model=str(tmp_path), max_context=64) as (c, _):
        from djinn.v1 import djinn_pb2 as pb

        s = c.create(_ids(cfg.vocab_size).tolist(), max_new=5)
        done = c.wait(pb.EVENT_KIND_FINISHED, s.id, 120).session
    assert list(done.generated_tokens) == ref_tokens
