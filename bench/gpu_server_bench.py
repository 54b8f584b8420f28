"""GPU benchmark of the Djinn runtime (issue 2, part 6): swap bandwidth of one
Llama-2-13B-shaped session, prefill of 2048 tokens and decode ms/token through the engine.

Every figure is measured with CUDA events on the device it reports.
    python bench/gpu_server_bench.py --out bench/results/gpu-server-DATE.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))

import torch  # noqa: E402

from djinn.model.build import build_model  # noqa: E402
from djinn.model.llama import weight_bytes  # noqa: E402
from djinn.runtime.engine import Engine  # noqa: E402
from djinn.runtime.host_pool import HostPool  # noqa: E402
from djinn.runtime.session import FINISHED, Session  # noqa: E402
from djinn.runtime.swap import SessionMemory, Swapper  # noqa: E402


def timed(fn, reps):
    """Median ms of fn() over reps, each bracketed by CUDA events."""
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    out.sort()
    return out[len(out) // 2], out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-2-13b")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dev, dtype = torch.device("cuda", 0), torch.bfloat16
    t0 = time.perf_counter()
    model, tok, args = build_model(a.model, dev, dtype, seed=0)
    load_s = time.perf_counter() - t0
    eng = Engine(model, tok, dev, dtype, a.context)
    item = 2
    res = dict(model=a.model, context=a.context, dtype="bfloat16", device_name=torch.cuda.get_device_name(0),
               torch=torch.__version__, weights_bytes=weight_bytes(model),
               weights_init_seconds=load_s)

    # --- swap: one session's KV + activation allowance through the runtime's own Swapper
    kv_shape = (args.n_layers, 2, args.n_kv_heads, a.context, args.head_dim)
    act = 4 * a.context * args.dim * item
    mem = SessionMemory(kv_shape, dtype, act)
    tp = time.perf_counter()
    pool = HostPool(mem.total_bytes + (1 << 30), pin=True)
    res["pinned_alloc_seconds_per_gib"] = (time.perf_counter() - tp) / (pool.nbytes / 2**30)
    mem.host_offset, mem.host_size = pool.reserve(mem.total_bytes)
    sw = Swapper(dev, pool)
    sw.allocate(mem)
    mem.kv.normal_()
    ref = mem.kv.clone()
    outs, ins = [], []
    for _ in range(a.reps):
        sw.swap_out(mem)
        outs.append(sw.wait(mem))
        sw.swap_in(mem)
        ins.append(sw.wait(mem))
    assert torch.equal(mem.kv, ref), "swap round trip changed the KV"
    gbps = lambda r: r.nbytes / r.ms / 1e6
    res["swap"] = dict(bytes=outs[0].nbytes, out_ms=[r.ms for r in outs], in_ms=[r.ms for r in ins],
                       out_gbps=[gbps(r) for r in outs], in_gbps=[gbps(r) for r in ins],
                       out_gbps_median=sorted(map(gbps, outs))[len(outs) // 2],
                       in_gbps_median=sorted(map(gbps, ins))[len(ins) // 2])
    # plain pinned copy of the same bytes, for comparison
    host = pool.view(mem.host_offset, dtype, kv_shape)
    d2h, _ = timed(lambda: host.copy_(mem.kv, non_blocking=True), a.reps)
    h2d, _ = timed(lambda: mem.kv.copy_(host, non_blocking=True), a.reps)
    kvb = mem.kv_bytes
    res["plain_pinned_copy"] = dict(bytes=kvb, d2h_ms=d2h, h2d_ms=h2d, d2h_gbps=kvb / d2h / 1e6, h2d_gbps=kvb / h2d / 1e6)

    # --- prefill and decode through the engine (the path sessions take), with a full context
    prompt = [(7 * i) % (args.vocab_size - 3) + 3 for i in range(a.context - a.decode_tokens)]

    def run_session(new_tokens):
        s = Session(prompt, new_tokens, a.context, mem)
        eng.begin(s)
        while s.pass_index == 0 and s.state != FINISHED:
            eng.advance(s)
        return s

    run_session(2)   # warm-up
    pre_ms, pre_all = timed(lambda: run_session(2), a.reps)
    s = run_session(a.decode_tokens + 1)
    per_tok = []
    for _ in range(a.decode_tokens - 1):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        k = s.pass_index
        while s.pass_index == k and s.state != FINISHED:
            eng.advance(s)
        e1.record()
        e1.synchronize()
        per_tok.append(e0.elapsed_time(e1))
    per_tok.sort()
    res["prefill"] = dict(tokens=len(prompt), ms_median=pre_ms, ms_all=pre_all,
                          tokens_per_s=len(prompt) / pre_ms * 1e3)
    res["decode"] = dict(ms_per_token_median=per_tok[len(per_tok) // 2], ms_all=per_tok,
                         at_position=len(prompt))
    res["command"] = " ".join([os.path.basename(sys.executable)] + sys.argv)
    res["commit"] = os.environ.get("DJINN_COMMIT") or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                                      text=True).stdout.strip()
    res["host"] = platform.node()
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps({k: res[k] for k in ("swap", "plain_pinned_copy", "prefill", "decode")}, indent=1)[:3000])


if __name__ == "__main__":
    main()
