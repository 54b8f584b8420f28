"""Where a decode pass's time goes, on the device (profile before optimising).

One session at position ~2008 of 2048 through Engine.advance, as perf_engine's decode does, and:
  pass_ms            whole decode pass, synchronised before and after (median of 20)
  enqueue_ms         CPU time to issue one pass (until the logits' copy to the CPU is issued: the
                     same pass without its final sync is not possible, so: a pass's CPU time in the
                     profiler, self CPU of everything but cudaMemcpy/Synchronize)
  gpu_busy_ms        sum of the GPU kernels' and copies' durations of one pass (torch.profiler)
  part_gpu_ms        each graph (pre, post, mlp, res, head) replayed alone 50 times: CUDA-event ms
  attention_ms       one session's eager attention part of a layer (KV write, attention into its block row), alone
  top_kernels        the profiler's table of one pass, by CUDA time
    python bench/profile_decode.py --batch-rows 16 --out /tmp/profile.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import prompt_tokens, use_server_package  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--batch-rows", type=int, default=16)
    p.add_argument("--cuda-graphs", default="on", choices=["on", "off"])
    p.add_argument("--prefill-tokens", type=int, default=0, help="also profile one prefill of this many tokens")
    p.add_argument("--out", required=True)
    o = p.parse_args()
    use_server_package()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from djinn.model.build import build_model
    from djinn.model.llama import attend_decode_row
    from djinn.runtime.engine import Engine
    from perf_engine import new_session, run_pass
    from djinn.runtime.stops import check_stop

    torch.set_grad_enabled(False)
    dev = torch.device("cuda", 0)
    model, tok, args = build_model(o.model, dev, torch.bfloat16)
    eng = Engine(model, tok, dev, torch.bfloat16, o.context, batch_rows=o.batch_rows, graphs=o.cuda_graphs == "on")
    s = new_session(eng, prompt_tokens(o.context - 40, args.vocab_size, salt=1), 38, o.context)
    eng.begin(s)
    run_pass(eng, s, check_stop)
    for _ in range(3):
        run_pass(eng, s, check_stop)
    res: dict = dict(model=o.model, batch_rows=o.batch_rows, cuda_graphs=o.cuda_graphs, position=s.input_pos)
    ms = []
    for _ in range(20):
        torch.cuda.synchronize()
        t = time.perf_counter()
        run_pass(eng, s, check_stop)
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t) * 1e3)
    res["pass_ms"] = round(statistics.median(ms), 3)

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_pass(eng, s, check_stop)
        torch.cuda.synchronize()
    ev = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in ev if e.device_type == torch.autograd.DeviceType.CUDA) \
        if hasattr(ev[0], "self_device_time_total") else None
    res["gpu_busy_ms"] = round(gpu_us / 1e3, 3) if gpu_us is not None else None
    res["top_kernels"] = ev.table(sort_by="self_cuda_time_total", row_limit=18)
    res["top_cpu"] = ev.table(sort_by="self_cpu_time_total", row_limit=18)

    P = eng.pieces
    if P.graphed:
        parts = {}
        for key in [k for k in [("attn", 0), ("pre", 0), ("post", 0), ("mlp", 0), ("res", 0), ("head", 0)] if k in P.graphs]:
            g = P.graphs[key]
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            g.replay()
            torch.cuda.synchronize()
            t = time.perf_counter()
            a.record()
            for _ in range(50):
                g.replay()
            b.record()
            torch.cuda.synchronize()
            parts[key[0]] = dict(gpu_ms=round(a.elapsed_time(b) / 50, 4), wall_ms=round((time.perf_counter() - t) * 1e3 / 50, 4))
        res["part_ms"] = parts
        # one layer's attention alone, as Engine._advance_block runs it for one session
        qkv, qs, o_blk = P.reg["qkv"], P.reg["qs"], P.reg["o"]
        ba = P.block_attention
        if ba is not None:
            ba.meta.copy_(torch.tensor(ba.meta_rows([(s.memory.kv, s.input_pos)])))
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        a.record()
        for _ in range(50):
            if ba is not None:
                ba(0, qkv, o_blk)
            else:
                attend_decode_row(args, qkv[0], qs[0], s.memory.kv[0], s.input_pos, o_blk[0])
        b.record()
        enq = (time.perf_counter() - t) * 1e3 / 50
        torch.cuda.synchronize()
        res["attention_kernel"] = "triton block" if ba is not None else "pytorch row"
        res["attention_ms"] = dict(gpu_ms=round(a.elapsed_time(b) / 50, 4), enqueue_ms=round(enq, 4))
    if o.prefill_tokens:
        res["prefill"] = profile_prefill(eng, args, o.prefill_tokens, o.context)
    with open(o.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("top")}, indent=1))
    print(res["top_kernels"])
    print(res["top_cpu"])
    if "prefill" in res:
        print("prefill", res["prefill"]["ms"], "gpu busy", res["prefill"]["gpu_busy_ms"])
        print(res["prefill"]["top_kernels"])
    return 0


def profile_prefill(eng, args, n: int, context: int) -> dict:
    """One prefill of n tokens (pass 0, piece by piece as the worker runs it), timed and profiled."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from perf_engine import new_session
    from djinn.runtime.session import FINISHED

    def once():
        s = new_session(eng, prompt_tokens(n, args.vocab_size, salt=7), 2, context)
        eng.begin(s)
        while s.pass_index == 0 and s.state != FINISHED:
            eng.advance(s)
        torch.cuda.synchronize()
    once()
    ms = []
    for _ in range(3):
        t = time.perf_counter()
        once()
        ms.append((time.perf_counter() - t) * 1e3)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        once()
    ev = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in ev if e.device_type == torch.autograd.DeviceType.CUDA)
    return dict(tokens=n, ms=[round(x, 2) for x in ms], gpu_busy_ms=round(gpu_us / 1e3, 3),
                top_kernels=ev.table(sort_by="self_cuda_time_total", row_limit=25))


if __name__ == "__main__":
    sys.exit(main())
