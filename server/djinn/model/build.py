"""Turns `--model` (a named config, a packaged model, a GGUF file or a checkpoint folder) into
weights on a device."""
from __future__ import annotations

import os

import torch

from .config import ModelArgs, named_config
from .llama import Llama, init_random_
from .packaged import PACKAGED, packaged_path
from .tokenizer import tokenizer_for


def build_model(model: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Returns (Llama in eval mode, tokenizer, ModelArgs)."""
    if model in PACKAGED:
        model = packaged_path(model)
    if model.lower().endswith(".gguf"):
        from .gguf_file import load_gguf

        net, tok, args = load_gguf(model, device=device, dtype=dtype)
        return net.eval().requires_grad_(False), tok, args
    if os.path.isdir(model):
        from .checkpoint import load_hf_checkpoint

        net, args = load_hf_checkpoint(model, device=device, dtype=dtype)
        return net.eval().requires_grad_(False), tokenizer_for(model, args.vocab_size), args
    args: ModelArgs = named_config(model)
    with torch.device(device):
        net = Llama(args).to(dtype)
    init_random_(net, seed)
    return net.eval().requires_grad_(False), tokenizer_for(None, args.vocab_size), args
