"""Issue-10 benchmark, the transformers side (run by bench/h200_perf.py as a child process):
LlamaForCausalLM of the same shape as a Djinn named config (config from djinn's ModelArgs),
random weights made directly on the device in the dtype (no hub), eager PyTorch with
attn_implementation sdpa, the same PYTORCH_CUDA_ALLOC_CONF as the server (expandable_segments,
set before torch initialises CUDA), and the same prompt length and positions as Djinn's figures:

  hf_prefill  one forward of the prompt (context - decode - warmup tokens) into a fresh cache,
              logits of the last position only (logits_to_keep=1, as Djinn's head), argmax, .item();
  hf_decode   after that prefill, one forward per token with the cache (DynamicCache by default,
              --cache static for StaticCache), greedy, the token read back to the CPU each step.

Every timed region is bracketed by torch.cuda.synchronize().
    python bench/hf_baseline.py --device cuda --model llama-2-13b --out /tmp/hf.json
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import log, prompt_tokens, set_alloc_conf, summary, sync, use_server_package  # noqa: E402

TAG = "hf"


def hf_config(args):
    """LlamaConfig from djinn's ModelArgs (the same fields as djinn.baselines.eager_pressure uses)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=args.dim, num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads, intermediate_size=args.intermediate_size,
        vocab_size=args.vocab_size, rms_norm_eps=args.norm_eps, rope_theta=args.rope_theta,
        max_position_embeddings=args.max_context, tie_word_embeddings=args.tie_embeddings, use_cache=True)


def build(args, dev, dtype, attn: str, seed: int):
    """Weights allocated once, on the device, in dtype; HF's own init (normal_, std 0.02) runs there."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = hf_config(args)
    torch.manual_seed(seed)
    with torch.device(dev):
        try:
            model = LlamaForCausalLM._from_config(cfg, dtype=dtype, attn_implementation=attn)
        except TypeError:   # transformers 4.x spells it torch_dtype
            model = LlamaForCausalLM._from_config(cfg, torch_dtype=dtype, attn_implementation=attn)
    return model.eval(), cfg


class Caller:
    """model(...) with the keyword names this transformers version uses."""

    def __init__(self, model, cfg, kind: str, context: int, dev, dtype):
        self.model, self.cfg, self.kind, self.context, self.dev, self.dtype = model, cfg, kind, context, dev, dtype
        params = inspect.signature(model.forward).parameters
        # transformers 5.24 renamed past_key_values to cache; 5.17 and 4.x use past_key_values
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep = ({"logits_to_keep": 1} if "logits_to_keep" in params else
                     {"num_logits_to_keep": 1} if "num_logits_to_keep" in params else {})
        self.cache_position = "cache_position" in params

    def new_cache(self):
        from transformers import DynamicCache, StaticCache

        if self.kind == "dynamic":
            try:
                return DynamicCache(config=self.cfg)
            except TypeError:
                return DynamicCache()
        tries = [dict(config=self.cfg, max_cache_len=self.context),
                 dict(config=self.cfg, max_batch_size=1, max_cache_len=self.context, device=self.dev, dtype=self.dtype)]
        for kw in tries:
            try:
                return StaticCache(**kw)
            except TypeError:
                continue
        raise RuntimeError("cannot construct transformers.StaticCache with the known signatures")

    def forward(self, ids, pos: int, cache) -> int:
        """ids: [T] on the device at positions pos..; returns the greedy next token (read to the CPU)."""
        import torch

        T = ids.shape[0]
        positions = torch.arange(pos, pos + T, device=self.dev)
        kw = {self.cache_kw: cache, "use_cache": True, "position_ids": positions[None], **self.keep}
        if self.cache_position:
            kw["cache_position"] = positions
        out = self.model(input_ids=ids[None], **kw)
        return int(out.logits[0, -1].argmax())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="llama-2-13b", help="a djinn named config")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--decode-tokens", type=int, default=30)
    p.add_argument("--warmup-tokens", type=int, default=2)
    p.add_argument("--prefill-reps", type=int, default=5)
    p.add_argument("--cache", default="dynamic", choices=["dynamic", "static"])
    p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa or eager")
    p.add_argument("--parts", default="hf_decode,hf_prefill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    o = p.parse_args()
    alloc = set_alloc_conf(o.device)
    use_server_package()
    res: dict = dict(pytorch_cuda_alloc_conf=alloc, errors={}, cache=o.cache, attn_implementation=o.attn)
    parts = set(x for x in o.parts.split(",") if x)
    try:
        import torch
        import transformers
    except ImportError as e:
        res["errors"] = {k: f"transformers is not importable here: {e}" for k in parts}
        json.dump(res, open(o.out, "w"), indent=1)
        return 0
    from djinn.model.config import named_config

    torch.set_grad_enabled(False)
    dev = torch.device("cuda", 0) if o.device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dtype = {"auto": torch.bfloat16 if o.device == "cuda" else torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16, "float32": torch.float32}[o.dtype]
    res.update(torch=torch.__version__, transformers=transformers.__version__, dtype=str(dtype).replace("torch.", ""),
               device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
    try:
        args = named_config(o.model)
        t0 = time.perf_counter()
        log(TAG, f"building transformers {transformers.__version__} LlamaForCausalLM ({o.model} shape, {dtype}, "
                 f"attn {o.attn}) on {dev} ...")
        model, cfg = build(args, dev, dtype, o.attn, o.seed)
        sync(dev)
        res["weights_init_s"] = round(time.perf_counter() - t0, 2)
        res["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
        log(TAG, f"model ready in {res['weights_init_s']} s ({res['weights_bytes'] / 1e9:.2f} GB)")
        call = Caller(model, cfg, o.cache, o.context, dev, dtype)
        res["forward_keywords"] = dict(cache=call.cache_kw, logits=list(call.keep) or None,
                                       cache_position=call.cache_position)
        P = o.context - o.decode_tokens - o.warmup_tokens
        ids = torch.tensor(prompt_tokens(P, args.vocab_size, salt=1), dtype=torch.long, device=dev)
        with torch.inference_mode():
            # warm-up: a prefill and a few decode steps, untimed
            cache = call.new_cache()
            tok = call.forward(ids, 0, cache)
            for i in range(3):
                tok = call.forward(torch.tensor([tok], device=dev), P + i, cache)
            del cache
            sync(dev)
            if "hf_prefill" in parts:
                ms = []
                for _ in range(o.prefill_reps):
                    cache = call.new_cache()
                    sync(dev)
                    t = time.perf_counter()
                    call.forward(ids, 0, cache)
                    sync(dev)
                    ms.append((time.perf_counter() - t) * 1e3)
                    del cache
                res["hf_prefill"] = dict(tokens=P, ms=summary(ms), method=(
                    f"model(input_ids [1, {P}], fresh {o.cache} cache, logits of the last position) + argmax + .item()"))
                log(TAG, f"prefill of {P} tokens: median {res['hf_prefill']['ms']['median']} ms")
            if "hf_decode" in parts:
                cache = call.new_cache()
                tok = call.forward(ids, 0, cache)
                pos, ms, first = P, [], None
                for i in range(o.warmup_tokens + o.decode_tokens):
                    x = torch.tensor([tok], dtype=torch.long, device=dev)
                    sync(dev)
                    t = time.perf_counter()
                    tok = call.forward(x, pos, cache)
                    sync(dev)
                    if i >= o.warmup_tokens:
                        ms.append((time.perf_counter() - t) * 1e3)
                        first = pos if first is None else first
                    pos += 1
                res["hf_decode"] = dict(ms=summary(ms), first_position=first, last_position=pos - 1, context=o.context,
                                        method=f"one model(input_ids [1, 1], {o.cache} cache) per token + argmax + "
                                               ".item() (the token read back each step, as Djinn's engine does)")
                log(TAG, f"decode at position {first}: median {res['hf_decode']['ms']['median']} ms/token "
                         f"(p10 {res['hf_decode']['ms']['p10']}, p90 {res['hf_decode']['ms']['p90']})")
                del cache
        if dev.type == "cuda":
            res["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
        del model
        gc.collect()
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        traceback.print_exc()
        for k in parts:
            res["errors"].setdefault(k, f"{type(e).__name__}: {e}")
    with open(o.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
