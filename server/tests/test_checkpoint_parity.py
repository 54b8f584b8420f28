"""Our Llama on a Hugging Face checkpoint gives the same numbers as transformers' LlamaForCausalLM."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

from djinn.model.build import build_model  # noqa: E402
from djinn.model.checkpoint import load_hf_checkpoint  # noqa: E402
from djinn.model.llama import rope_tables  # noqa: E402
from djinn.model.tokenizer import HFTokenizer  # noqa: E402

CPU = torch.device("cpu")
WORDS = ("the a cat dog sat on mat and ran to house red blue big small over under "
         "quick brown fox jumps lazy").split()
PROMPT = "the quick brown fox jumps over the lazy dog and the cat sat"  # 13 tokens
TOL = 1e-4


def _hf_config(**over) -> LlamaConfig:
    kw = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=160, vocab_size=300, max_position_embeddings=128,
              rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
    kw.update(over)
    return LlamaConfig(**kw)


def _write_tokenizer(path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2}
    for i, w in enumerate(WORDS):
        vocab[w] = 3 + i
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(os.path.join(str(path), "tokenizer.json"))


def _make_checkpoint(path, seed: int = 0, max_shard_size: str | None = None, **cfg_over) -> LlamaForCausalLM:
    """Random HF Llama with weights big enough that logits are O(1), saved as safetensors."""
    torch.manual_seed(seed)
    cfg = _hf_config(**cfg_over)
    hf = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))  # not all ones, so a misplaced norm shows
            else:
                p.normal_(0.0, 0.15)
    hf = hf.eval()
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    hf.save_pretrained(str(path), **kw)  # transformers 5 always writes safetensors
    _write_tokenizer(path)
    return hf


def _cache_kw(hf, cache) -> dict:
    """transformers 5.24 renamed forward's past_key_values to cache (older 5.x: past_key_values)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    return {name: cache, "use_cache": True}


def _hf_eager(hf: LlamaForCausalLM) -> LlamaForCausalLM:
    hf.config._attn_implementation = "eager"
    return hf


def _fresh_kv(args, context: int = 64):
    kv = torch.zeros(args.n_layers, 2, args.n_kv_heads, context, args.head_dim)
    cos, sin = rope_tables(args, context, CPU, torch.float32)
    return kv, cos, sin


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_ckpt")
    hf = _make_checkpoint(path)
    return path, _hf_eager(hf)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_sharded")
    hf = _make_checkpoint(path, seed=1, max_shard_size="100KB")
    return path, _hf_eager(hf)


def _prompt_ids(tok) -> torch.Tensor:
    ids = tok.encode(PROMPT)
    assert 0 not in ids, "prompt has unknown words"
    return torch.tensor(ids, dtype=torch.long)


def _check_prefill(path, hf):
    net, tok, args = build_model(str(path), CPU, torch.float32)
    assert isinstance(tok, HFTokenizer)
    ids = _prompt_ids(tok)
    assert len(ids) >= 12
    kv, cos, sin = _fresh_kv(args)
    with torch.no_grad():
        ours = net.forward_plain(ids, kv, 0, cos, sin)
        ref = hf(ids[None]).logits[0].float()
    assert ours.shape == ref.shape == (len(ids), args.vocab_size)
    assert ref.abs().max() > 0.5, "logits too small for a meaningful comparison"
    diff = (ours - ref).abs().max().item()
    assert diff < TOL, f"prefill logits differ by {diff}"
    return net, tok, args


def test_config_mapping(ckpt):
    path, hf = ckpt
    _, args = load_hf_checkpoint(str(path), CPU, torch.float32)
    assert (args.n_layers, args.dim, args.n_heads, args.n_kv_heads) == (3, 64, 4, 2)
    assert (args.intermediate_size, args.vocab_size, args.max_context) == (160, 300, 128)
    assert args.norm_eps == pytest.approx(1e-6)
    assert args.rope_theta == pytest.approx(10000.0)
    assert not args.tie_embeddings


def test_weights_equal_and_dtype(ckpt):
    path, hf = ckpt
    net, _ = load_hf_checkpoint(str(path), CPU, torch.bfloat16)
    ref = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    for name, p in net.state_dict().items():
        assert p.device.type == "cpu" and p.dtype == torch.bfloat16, name
        assert torch.equal(p, ref[name].to(torch.bfloat16)), name


def test_prefill_parity(ckpt):
    _check_prefill(*ckpt)


def test_prefill_parity_sharded(sharded):
    path, hf = sharded
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert not (path / "model.safetensors").exists()
    _check_prefill(path, hf)


def test_decode_parity_token_by_token(ckpt):
    path, hf = ckpt
    net, tok, args = build_model(str(path), CPU, torch.float32)
    ids = _prompt_ids(tok)
    kv, cos, sin = _fresh_kv(args)
    cache = DynamicCache(config=hf.config)
    worst = 0.0
    with torch.no_grad():
        for i in range(len(ids)):
            ours = net.forward_plain(ids[i:i + 1], kv, i, cos, sin)
            ref = hf(ids[None, i:i + 1], **_cache_kw(hf, cache)).logits[0].float()
            worst = max(worst, (ours - ref).abs().max().item())
    assert worst < TOL, f"decode logits differ by {worst}"


def test_prefill_then_decode_parity(ckpt):
    """A prefill chunk followed by single tokens (the engine's pattern) vs HF with its cache."""
    path, hf = ckpt
    net, tok, args = build_model(str(path), CPU, torch.float32)
    ids = _prompt_ids(tok)
    split = 7
    kv, cos, sin = _fresh_kv(args)
    cache = DynamicCache(config=hf.config)
    with torch.no_grad():
        ours = [net.forward_plain(ids[:split], kv, 0, cos, sin)]
        ref = [hf(ids[None, :split], **_cache_kw(hf, cache)).logits[0]]
        for i in range(split, len(ids)):
            ours.append(net.forward_plain(ids[i:i + 1], kv, i, cos, sin))
            ref.append(hf(ids[None, i:i + 1], **_cache_kw(hf, cache)).logits[0])
    diff = (torch.cat(ours) - torch.cat(ref).float()).abs().max().item()
    assert diff < TOL, diff


def _our_greedy(net, args, ids: torch.Tensor, n: int) -> list[int]:
    kv, cos, sin = _fresh_kv(args)
    out = []
    with torch.no_grad():
        logits = net.forward_plain(ids, kv, 0, cos, sin)
        pos = len(ids)
        for _ in range(n):
            nxt = int(logits[-1].argmax())
            out.append(nxt)
            logits = net.forward_plain(torch.tensor([nxt]), kv, pos, cos, sin)
            pos += 1
    return out


def test_greedy_generate_identical(ckpt):
    path, hf = ckpt
    net, tok, args = build_model(str(path), CPU, torch.float32)
    ids = _prompt_ids(tok)
    with torch.no_grad():
        ref = hf.generate(ids[None], max_new_tokens=5, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    assert len(ref) == 5
    assert _our_greedy(net, args, ids, 5) == ref


def test_tied_embeddings(tmp_path):
    hf = _hf_eager(_make_checkpoint(tmp_path, seed=2, tie_word_embeddings=True))
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    net, tok, args = _check_prefill(tmp_path, hf)
    assert args.tie_embeddings
    assert net.lm_head.weight is net.embed_tokens.weight
    ids = _prompt_ids(tok)
    with torch.no_grad():
        ref = hf.generate(ids[None], max_new_tokens=5, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    assert _our_greedy(net, args, ids, 5) == ref


# ---- broken folders: clear errors, nothing half-loaded ----

def _copy(src, dst):
    shutil.copytree(str(src), str(dst))
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_checkpoint(str(tmp_path / "nope"), CPU, torch.float32)


def test_missing_config(ckpt, tmp_path):
    path = _copy(ckpt[0], tmp_path / "c")
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_checkpoint(str(path), CPU, torch.float32)


def test_missing_weights_file(ckpt, tmp_path):
    path = _copy(ckpt[0], tmp_path / "c")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_checkpoint(str(path), CPU, torch.float32)


def test_missing_shard(sharded, tmp_path):
    path = _copy(sharded[0], tmp_path / "c")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (path / victim).unlink()
    with pytest.raises(FileNotFoundError, match=victim.replace(".", r"\.")):
        load_hf_checkpoint(str(path), CPU, torch.float32)


def test_missing_and_unexpected_tensors(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    path = _copy(ckpt[0], tmp_path / "c")
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.1.mlp.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensor.*layers\.1\.mlp\.up_proj\.weight.*unexpected.*extra"):
        load_hf_checkpoint(str(path), CPU, torch.float32)


def test_shape_mismatch(ckpt, tmp_path):
    path = _copy(ckpt[0], tmp_path / "c")
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_hf_checkpoint(str(path), CPU, torch.float32)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma"}, "model_type"),
    ({"head_dim": 32}, "head_dim"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 8.0}}, "yarn"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}, "dynamic"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
])
def test_unsupported_config(ckpt, tmp_path, change, message):
    path = _copy(ckpt[0], tmp_path / "c")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(change)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message):
        load_hf_checkpoint(str(path), CPU, torch.float32)


def test_rope_theta_forms(ckpt, tmp_path):
    """Old configs: top-level rope_theta (+ rope_scaling null); new: rope_parameters."""
    path = _copy(ckpt[0], tmp_path / "c")
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg.update(rope_theta=500000.0, rope_scaling=None)
    (path / "config.json").write_text(json.dumps(cfg))
    _, args = load_hf_checkpoint(str(path), CPU, torch.float32)
    assert args.rope_theta == 500000.0
    cfg.pop("rope_theta")
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 250000.0}
    (path / "config.json").write_text(json.dumps(cfg))
    _, args = load_hf_checkpoint(str(path), CPU, torch.float32)
    assert args.rope_theta == 250000.0
