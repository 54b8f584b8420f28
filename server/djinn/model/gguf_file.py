"""Loads a GGUF file (llama.cpp's format) into our Llama, with the tokenizer of its metadata.

Architectures: "llama" (Llama 2/3.x, Mistral, SmolLM, as llama.cpp converts them) and "qwen2"
(biases on q/k/v). Tensors are dequantised to fp32 with the `gguf` package (F32, F16, BF16,
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants: whatever gguf.quants.dequantize knows), one at a
time, then cast to the target dtype on the target device. The numbers are those of the
quantised file: a Q4_1 model computes with the Q4_1 weights' values, in fp32 or bf16.

llama.cpp's converter permutes the rows of attn_q/attn_k of "llama" models so that RoPE pairs
neighbouring elements (its "normal" RoPE); ours is HF's rotate-half, so the permutation is
undone here. "qwen2" files use the rotate-half ("neox") layout already and are not permuted.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch

from .config import ModelArgs, RopeScaling
from .llama import Llama

SUPPORTED_ARCHS = ("llama", "qwen2")
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
              "output.weight": "lm_head.weight"}
_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")
ROPE_FREQS = "rope_freqs.weight"  # Llama 3.1's scaling, as one divisor per frequency


class Metadata:
    """The key/value fields of a GGUF file, with errors that name the file and the key."""

    def __init__(self, reader, path: str):
        self.reader, self.path = reader, path

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def need(self, key: str):
        value = self.get(key)
        if value is None:
            raise ValueError(f"{self.path}: GGUF metadata has no '{key}'")
        return value


def our_name(gguf_name: str) -> str | None:
    """Our parameter name for a GGUF tensor name, None for a name we do not know."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    m = _BLOCK.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    return None


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of convert_hf_to_gguf's permute(): rows of each head from llama.cpp's interleaved
    pairs (0, 1), (2, 3) ... back to HF's halves (0, Dh/2), (1, Dh/2 + 1) ..."""
    rest = w.shape[1:]
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *rest).transpose(1, 2).reshape(w.shape)


def args_from_gguf(meta: Metadata, tensor_names: set[str], rope_freqs: np.ndarray | None) -> ModelArgs:
    """ModelArgs from the metadata; ValueError naming what is unsupported."""
    arch = meta.need("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"{meta.path}: GGUF architecture {arch!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_ARCHS)} (Llama 2/3.x, Mistral, SmolLM, Qwen2/2.5)")
    p = arch + "."
    dim, heads = int(meta.need(p + "embedding_length")), int(meta.need(p + "attention.head_count"))
    kv_heads = int(meta.get(p + "attention.head_count_kv", heads))
    if dim % heads or heads % kv_heads:
        raise ValueError(f"{meta.path}: {heads} heads / {kv_heads} KV heads do not divide {dim}")
    head_dim = dim // heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        v = meta.get(p + key)
        if v is not None and int(v) != head_dim:
            raise ValueError(f"{meta.path}: {p + key} = {v} differs from embedding_length / head_count = "
                             f"{head_dim}; not supported")
    if meta.get(p + "expert_count"):
        raise ValueError(f"{meta.path}: mixture-of-experts models are not supported")
    scaling = None
    kind = meta.get(p + "rope.scaling.type", "none")
    if kind == "linear":
        scaling = RopeScaling("linear", factor=float(meta.need(p + "rope.scaling.factor")))
    elif kind not in ("none", None):
        raise ValueError(f"{meta.path}: RoPE scaling type {kind!r} is not supported (only linear, and "
                         f"Llama 3.1's per-frequency factors in {ROPE_FREQS})")
    if rope_freqs is not None:
        if scaling is not None:
            raise ValueError(f"{meta.path}: both {ROPE_FREQS} and rope.scaling.type {kind!r}")
        scaling = RopeScaling("factors", freq_factors=tuple(float(x) for x in rope_freqs.reshape(-1)))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = int(meta.get(p + "vocab_size") or (len(tokens) if tokens is not None else 0))
    if not vocab:
        raise ValueError(f"{meta.path}: GGUF metadata has no vocab_size and no tokenizer.ggml.tokens")
    return ModelArgs(
        n_layers=int(meta.need(p + "block_count")),
        dim=dim, n_heads=heads, n_kv_heads=kv_heads,
        intermediate_size=int(meta.need(p + "feed_forward_length")),
        vocab_size=vocab,
        norm_eps=float(meta.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta.get(p + "rope.freq_base", 10000.0)),
        # a sliding window equals full attention while the context fits in it: the context is capped there
        max_context=min(int(meta.get(p + "context_length", 4096)),
                        int(meta.get(p + "attention.sliding_window") or 1 << 30)),
        tie_embeddings="output.weight" not in tensor_names,
        attention_bias=arch == "qwen2",
        rope_scaling=scaling,
    )


def dequantize(tensor) -> np.ndarray:
    """One GGUF tensor as fp32 numpy in PyTorch's dimension order (GGUF lists them innermost first)."""
    from gguf.quants import dequantize as gguf_dequantize

    shape = tuple(int(d) for d in reversed(tensor.shape))
    try:
        data = gguf_dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise ValueError(f"tensor {tensor.name}: GGUF type {tensor.tensor_type.name} cannot be "
                         "dequantised by the gguf package") from None
    return np.array(data, dtype=np.float32).reshape(shape)  # a copy: F32 data would alias the read-only map


def load_gguf(path: str, device, dtype: torch.dtype | None = None):
    """Returns (Llama on `device` in `dtype` (None: fp32), tokenizer, ModelArgs)."""
    from gguf import GGUFReader

    from .gguf_tokenizer import tokenizer_from_gguf

    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        reader = GGUFReader(path)
    except Exception as e:  # a truncated or foreign file: say so, with the reader's reason
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from None
    meta = Metadata(reader, path)
    by_name = {t.name: t for t in reader.tensors}
    rope_freqs = dequantize(by_name.pop(ROPE_FREQS)) if ROPE_FREQS in by_name else None
    args = args_from_gguf(meta, set(by_name), rope_freqs)
    dtype = dtype or torch.float32
    device = torch.device(device)

    with torch.device("meta"):
        net = Llama(args)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if args.tie_embeddings:
        expected.pop("lm_head.weight")
    unknown = sorted(n for n in by_name if our_name(n) not in expected)
    missing = sorted(k for k in expected if k not in {our_name(n) for n in by_name})
    if unknown or missing:
        parts = [f"tensor(s) not supported: {', '.join(unknown[:5])}"] if unknown else []
        parts += [f"missing tensor(s): {', '.join(missing[:5])}"] if missing else []
        raise ValueError(f"{path}: does not match a {meta.get('general.architecture')} model: " + "; ".join(parts))

    permuted = meta.get("general.architecture") == "llama"
    state: dict[str, torch.Tensor] = {}
    for name, tensor in by_name.items():
        ours = our_name(name)
        w = torch.from_numpy(dequantize(tensor))
        if tuple(w.shape) != expected[ours]:
            raise ValueError(f"{path}: tensor {name} has shape {list(w.shape)}, expected {list(expected[ours])}")
        if permuted and ours.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, args.n_heads)
        elif permuted and ours.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, args.n_kv_heads)
        state[ours] = w.to(device=device if device.type != "meta" else "cpu", dtype=dtype)
    if args.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    net.load_state_dict(state, strict=True, assign=True)
    if args.tie_embeddings:
        net.lm_head.weight = net.embed_tokens.weight
    return net, tokenizer_from_gguf(meta), args
