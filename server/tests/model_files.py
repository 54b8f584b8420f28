"""Small random checkpoints written by the tests: HF folders of each architecture, and GGUF files
of them written the way llama.cpp's convert_hf_to_gguf.py writes them (Q/K rows permuted for
"llama"), quantised with the gguf package."""
from __future__ import annotations

import numpy as np
import torch

SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, vocab_size=320, max_position_embeddings=128, rms_norm_eps=1e-6)


def random_hf(kind: str, seed: int = 0, **over):
    """(HF model in eval mode, its config) of kind llama / llama3 / mistral / qwen2, with weights
    big enough that logits are O(1) and norms that are not all ones."""
    import transformers as T

    kw = dict(SMALL)
    if kind == "llama3":
        kw["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    kw.update(over)
    cls = {"llama": (T.LlamaConfig, T.LlamaForCausalLM), "llama3": (T.LlamaConfig, T.LlamaForCausalLM),
           "mistral": (T.MistralConfig, T.MistralForCausalLM), "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM)}[kind]
    torch.manual_seed(seed)
    cfg = cls[0](**kw)
    cfg._attn_implementation = "eager"
    hf = cls[1](cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return hf.eval(), cfg


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def gpt2_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): 256 bytes, a few merges, <|endoftext|>, fillers."""
    tokens = _bytes_to_unicode()
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n"]
    tokens += ["Ġt", "he", "Ġthe", "Ġa", "in", "<|endoftext|>"]
    types = [1] * (len(tokens) - 1) + [3]
    while len(tokens) < vocab_size:
        tokens.append(f"<filler_{len(tokens)}>")
        types.append(4)
    return tokens, types, merges


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (n_head already the KV head count for k)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(hf, cfg, path, arch: str, qtype=None, name: str = "test model", rope_freqs=None) -> None:
    """hf's weights as a GGUF file; 2-D weights in qtype (gguf.GGMLQuantizationType, None: F32)."""
    import gguf

    qtype = qtype or gguf.GGMLQuantizationType.F32
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    w.add_file_type(int(qtype))
    tokens, types, merges = gpt2_vocab(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                 "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
                 "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
                 "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
                 "self_attn.v_proj.bias": "attn_v.bias",
                 "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                 "mlp.down_proj.weight": "ffn_down.weight"}
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    for hf_name, t in hf.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if hf_name in names:
            g = names[hf_name]
        else:
            layer, rest = hf_name.removeprefix("model.layers.").split(".", 1)
            g = f"blk.{layer}.{per_layer[rest]}"
        a = t.detach().float().numpy().copy()
        if arch == "llama" and g.endswith("attn_q.weight"):
            a = _permute(a, heads)
        elif arch == "llama" and g.endswith("attn_k.weight"):
            a = _permute(a, kv)
        if a.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(g, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(g, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama3_freq_factors(cfg) -> np.ndarray:
    """What convert_hf_to_gguf.py writes as rope_freqs for rope type llama3: one divisor per frequency."""
    import math

    rp = cfg.rope_parameters
    dim = cfg.hidden_size // cfg.num_attention_heads
    freqs = 1.0 / (rp["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)
