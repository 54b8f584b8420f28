"""Loads a Hugging Face checkpoint folder (config.json + safetensors) into our Llama.

Only what our model computes is accepted: model_type "llama" (2 and 3.x), "mistral" or
"qwen2" (Qwen2/2.5: biases on q/k/v), SiLU MLP without biases, head_dim == hidden / heads,
RoPE plain or with "linear" or "llama3" scaling, sliding windows only as a cap on the context.
Anything else raises a ValueError that names the field, rather than loading and computing
wrong numbers.

The model is built on the "meta" device (no memory), the tensors are read one at a time
with safetensors straight onto the target device in the target dtype, and the module is
filled with load_state_dict(assign=True): the weights are allocated once.
"""
from __future__ import annotations

import json
import os
from typing import Any

import torch

from .config import ModelArgs, RopeScaling
from .llama import Llama

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# HF keys that hold no weights of ours (old checkpoints saved RoPE's inverse frequencies).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _few(names, n: int = 5) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


def _rope(cfg: dict[str, Any], where: str) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from rope_theta + rope_scaling (transformers 4) or rope_parameters (5);
    ValueError for a scaling kind our RoPE does not compute."""
    theta = cfg.get("rope_theta")
    scaling = None
    for key in ("rope_parameters", "rope_scaling"):
        rope = cfg.get(key)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise ValueError(f"{where}: '{key}' must be an object, got {rope!r}")
        if any(isinstance(v, dict) for v in rope.values()):
            raise ValueError(f"{where}: per-layer-type '{key}' is not supported (one RoPE for all layers)")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope.get("rope_theta") is not None:
            theta = rope["rope_theta"]
        if rope_type in (None, "default"):
            continue
        factor = rope.get("factor")
        if rope_type == "linear" and factor:
            scaling = RopeScaling("linear", factor=float(factor))
        elif rope_type == "llama3" and factor:
            scaling = RopeScaling("llama3", factor=float(factor),
                                  low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                                  high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                                  original_context=int(rope.get("original_max_position_embeddings", 8192)))
        else:
            raise ValueError(f"{where}: {key} type '{rope_type}' is not supported; implemented: "
                             "'default', 'linear' and 'llama3' (each with a factor)")
    return float(theta if theta is not None else 10000.0), scaling


def _window_context(cfg: dict[str, Any], model_type: str, max_context: int) -> int:
    """Sliding-window attention equals full attention while a context fits in the window, so the
    largest context is capped at the window rather than computing wrong numbers beyond it."""
    window = cfg.get("sliding_window")
    if model_type == "qwen2" and not cfg.get("use_sliding_window", False):
        window = None
    if model_type == "llama":
        window = None
    return min(max_context, int(window)) if window else max_context


def args_from_hf_config(cfg: dict[str, Any], where: str = CONFIG_FILE) -> ModelArgs:
    """ModelArgs from a parsed config.json; ValueError for anything we do not compute."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(f"{where}: model_type is {model_type!r}; supported: {', '.join(SUPPORTED_TYPES)} "
                         "(Llama 2/3.x, Mistral, Qwen2/2.5 and their fine-tunes)")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "vocab_size") if cfg.get(k) is None]
    if missing:
        raise ValueError(f"{where}: missing required field(s): {', '.join(missing)}")
    dim, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    if dim % heads:
        raise ValueError(f"{where}: hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    if heads % kv_heads:
        raise ValueError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = cfg.get("head_dim")
    if head_dim is not None and int(head_dim) != dim // heads:
        raise ValueError(f"{where}: head_dim {head_dim} differs from hidden_size / num_attention_heads "
                         f"= {dim // heads}; not supported")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{where}: hidden_act {act!r} is not supported (only 'silu')")
    # Llama's attention_bias puts a bias on o_proj too; only Qwen2's q/k/v biases are computed.
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise ValueError(f"{where}: {flag}=true is not supported (biases only on q/k/v, as Qwen2 has them)")
    theta, scaling = _rope(cfg, where)
    max_context = int(cfg.get("max_position_embeddings") or 4096)
    return ModelArgs(
        n_layers=int(cfg["num_hidden_layers"]),
        dim=dim,
        n_heads=heads,
        n_kv_heads=kv_heads,
        intermediate_size=int(cfg["intermediate_size"]),
        vocab_size=int(cfg["vocab_size"]),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        max_context=_window_context(cfg, model_type, max_context),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=model_type == "qwen2",
        rope_scaling=scaling,
    )


def _shard_map(path: str) -> dict[str, str]:
    """{hf tensor name: shard file path}."""
    index = os.path.join(path, INDEX_FILE)
    single = os.path.join(path, SINGLE_FILE)
    if os.path.exists(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index}: not a valid safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        absent = [s for s in files if not os.path.exists(os.path.join(path, s))]
        if absent:
            raise FileNotFoundError(f"checkpoint {path}: shard(s) listed in {INDEX_FILE} are missing: {_few(absent)}")
        return {name: os.path.join(path, shard) for name, shard in weight_map.items()}
    if os.path.exists(single):
        from safetensors import safe_open

        with safe_open(single, framework="pt") as f:
            return {name: single for name in f.keys()}
    if any(os.path.exists(os.path.join(path, n)) for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise ValueError(f"checkpoint {path}: only pytorch_model.bin found; convert it to safetensors "
                         "(only .safetensors checkpoints are loaded)")
    raise FileNotFoundError(f"checkpoint {path}: no {SINGLE_FILE} or {INDEX_FILE}")


def _expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = Llama(args)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def load_hf_checkpoint(path: str, device, dtype: torch.dtype | str | None = None) -> tuple[Llama, ModelArgs]:
    """Returns (Llama on `device` in `dtype`, its ModelArgs). dtype None: the config's dtype, else fp32."""
    from safetensors import safe_open

    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"checkpoint {path}: no {CONFIG_FILE}")
    with open(config_path) as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: invalid JSON ({e})") from None
    args = args_from_hf_config(cfg, config_path)

    if dtype is None or dtype == "auto":
        dtype = _DTYPES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"), torch.float32)
    elif isinstance(dtype, str):
        dtype = _DTYPES[dtype]
    device = torch.device(device)

    shards = _shard_map(path)
    names: dict[str, tuple[str, str]] = {}  # our name -> (hf name, file)
    unexpected = []
    expected = _expected_shapes(args)
    for hf_name, file in shards.items():
        if hf_name.endswith(IGNORED_SUFFIXES):
            continue
        ours = hf_name[len("model."):] if hf_name.startswith("model.") else hf_name
        if ours not in expected:
            unexpected.append(hf_name)
        names[ours] = (hf_name, file)
    if args.tie_embeddings:
        names.pop("lm_head.weight", None)  # tied: lm_head is embed_tokens, whatever the file holds
    missing = [k for k in expected if k not in names and not (args.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
        raise ValueError(f"checkpoint {path} does not match its config.json: " + "; ".join(parts))

    # Shapes first, from the headers alone, so a bad file fails before anything is allocated.
    by_file: dict[str, list[str]] = {}
    for ours, (_, file) in names.items():
        by_file.setdefault(file, []).append(ours)
    bad = []
    for file, ours_list in by_file.items():
        with safe_open(file, framework="pt") as f:
            for ours in ours_list:
                shape = tuple(f.get_slice(names[ours][0]).get_shape())
                if shape != expected[ours]:
                    bad.append(f"{names[ours][0]} {list(shape)} (expected {list(expected[ours])})")
    if bad:
        raise ValueError(f"checkpoint {path}: tensor shape mismatch: {_few(bad, 3)}")

    state: dict[str, torch.Tensor] = {}
    if device.type == "meta":
        open_device = "cpu"
    elif device.type == "cuda" and device.index is None:
        open_device = f"cuda:{torch.cuda.current_device()}"
    else:
        open_device = str(device)
    for file, ours_list in by_file.items():
        with safe_open(file, framework="pt", device=open_device) as f:
            for ours in ours_list:
                state[ours] = f.get_tensor(names[ours][0]).to(dtype)
    if args.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]

    with torch.device("meta"):
        net = Llama(args)
    net.load_state_dict(state, strict=True, assign=True)
    if args.tie_embeddings:
        net.lm_head.weight = net.embed_tokens.weight
    return net, args
