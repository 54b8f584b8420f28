"""Decode attention on the device, kernel settings side by side: the block kernels
(kernels/decode_attention.py) at several chunk/warp settings against the PyTorch row path
(llama.attend_decode_row), for 1 and 16 sessions of Llama-2-13B's shape at position ~2011 of 2048.
Each figure is the GPU time of one layer's attention (CUDA events over 40 layers x reps).

  PYTHONPATH=server python bench/attention_kernels.py --out bench/results/.../attention-kernels.json
"""
import argparse
import json
import sys

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--kv-heads", type=int, default=40)
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--pos", type=int, default=2011)
    p.add_argument("--reps", type=int, default=5)
    o = p.parse_args()
    from djinn.kernels.decode_attention import BlockAttention
    from djinn.model.config import ModelArgs
    from djinn.model.llama import attend_decode_row

    dev, dt, D = torch.device("cuda"), torch.bfloat16, 128
    H, Hkv, nL = o.heads, o.kv_heads, o.layers
    kvs = [torch.randn(nL, 2, Hkv, o.context, D, device=dev, dtype=dt) for _ in range(16)]
    qkv = torch.randn(16, H + 2 * Hkv, D, device=dev, dtype=dt)
    out = torch.zeros(16, H * D, device=dev, dtype=dt)
    res: dict = dict(shape=dict(heads=H, kv_heads=Hkv, head_dim=D, layers=nL, context=o.context, pos=o.pos),
                     kv_bytes_per_session_layer=2 * Hkv * (o.pos + 1) * D * 2, results=[])

    def timed(fn) -> float:
        for layer in range(nL):   # warm-up: compiled, caches set
            fn(layer)
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(o.reps):
            for layer in range(nL):
                fn(layer)
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / (o.reps * nL) * 1e3   # us per layer

    for n in (1, 16):
        nbytes = n * res["kv_bytes_per_session_layer"]
        args = ModelArgs(dim=H * D, n_layers=nL, n_heads=H, n_kv_heads=Hkv, vocab_size=32000, intermediate_size=1) \
            if "intermediate_size" in ModelArgs.__dataclass_fields__ else None
        qs = qkv[:, :H] * D ** -0.5

        def torch_rows(layer):
            for i in range(n):
                attend_decode_row(args, qkv[i], qs[i], kvs[i][layer], o.pos, out[i])
        try:
            us = timed(torch_rows)
            res["results"].append(dict(sessions=n, kernel="pytorch rows", us_per_layer=round(us, 2),
                                       tb_per_s=round(nbytes / us / 1e6, 3)))
        except Exception as e:  # noqa: BLE001
            res["results"].append(dict(sessions=n, kernel="pytorch rows", error=str(e)[:200]))
        for chunk, bt, warps, evict in [(32, 16, 1, ""), (64, 16, 1, ""), (64, 32, 1, ""), (64, 16, 2, ""),
                                        (128, 16, 1, ""), (128, 16, 2, "")]:
            ba = BlockAttention(H, Hkv, D, 16, o.context, dev, dt, chunk=chunk, block_t=bt, warps=warps, evict=evict)
            ba.meta.copy_(torch.tensor(ba.meta_rows([(kvs[i], o.pos) for i in range(n)])))
            us = timed(lambda layer: ba(layer, qkv, out, store=False))
            res["results"].append(dict(sessions=n, kernel="triton block", chunk=chunk, block_t=bt, warps=warps, evict=evict,
                                       us_per_layer=round(us, 2), tb_per_s=round(nbytes / us / 1e6, 3)))
            print(res["results"][-1], flush=True)
    with open(o.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
