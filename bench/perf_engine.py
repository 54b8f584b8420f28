"""Issue-10 benchmark, in-process Djinn parts (run by bench/h200_perf.py as a child process, so
that its device memory is gone before the server parts start):

  decode   one session decoding at position context - decode - warmup (2016 of 2048), through the
           engine path the server's worker runs for a session without breakpoints:
           Engine.begin, then Engine.advance + stops.check_stop after every piece, as
           Scheduler._run does (no gRPC and no event publishing here);
  prefill  Engine.begin + every piece of pass 0 (the prompt of the same length), to the first token;
  swap     one session out and another in together through runtime/swap.py's Swapper, as
           Scheduler._make_resident issues them (swap_out(victim) then swap_in(session)), and the
           plain pinned-copy ceilings of the same bytes: both directions at once on two streams,
           and each direction alone.

Every timed region is bracketed by torch.cuda.synchronize() (nothing on the CPU).
    python bench/perf_engine.py --device cuda --model llama-2-13b --out /tmp/engine.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import log, prompt_tokens, set_alloc_conf, summary, sync, use_server_package  # noqa: E402

TAG = "engine"


def run_pass(eng, s, check_stop) -> None:
    """One forward pass of s, piece by piece, checking for a stop after each (Scheduler._run)."""
    from djinn.runtime.session import FINISHED
    from djinn.runtime.span import pieces_to_next_check

    k = s.pass_index
    while s.state != FINISHED and s.pass_index == k:   # the worker's spans: unchecked pieces, then a check
        eng.advance_span([s], pieces_to_next_check([s], eng.args.n_layers))
        check_stop(eng, s)


def new_session(eng, prompt, max_new, context):
    """A session as CreateSession + Swapper.allocate make it: zeroed KV of `context` tokens on the device."""
    return eng.scratch_session(prompt, max_new, context)


def measure_engine(o, parts, res) -> None:
    import torch

    from djinn.model.build import build_model
    from djinn.model.llama import weight_bytes
    from djinn.runtime.engine import Engine
    from djinn.runtime.stops import check_stop

    dev, dtype = o.dev, o.dt
    t0 = time.perf_counter()
    log(TAG, f"building {o.model} ({dtype}) on {dev} with random weights ...")
    model, tok, args = build_model(o.model, dev, dtype, seed=o.seed)
    sync(dev)
    res["weights_init_s"] = round(time.perf_counter() - t0, 2)
    res["weights_bytes"] = weight_bytes(model)
    log(TAG, f"model ready in {res['weights_init_s']} s ({res['weights_bytes'] / 1e9:.2f} GB)")
    t0 = time.perf_counter()
    eng = Engine(model, tok, dev, dtype, o.context, batch_rows=o.batch_rows, graphs=o.cuda_graphs == "on")
    sync(dev)
    res["engine_init_s"] = round(time.perf_counter() - t0, 2)   # fused weights + graph capture
    res["graphs"] = dict(on=eng.pieces.graphed, rows=eng.batch_rows, bytes=eng.pieces.nbytes)
    P = o.context - o.decode_tokens - o.warmup_tokens
    prompt = prompt_tokens(P, args.vocab_size, salt=1)

    # warm-up: a whole short session (kernels chosen, cuBLAS handles made) before anything is timed
    s = new_session(eng, prompt, 3, o.context)
    eng.begin(s)
    for _ in range(3):
        run_pass(eng, s, check_stop)
    sync(dev)
    del s

    if "prefill" in parts:
        ms = []
        for _ in range(o.prefill_reps):
            s = new_session(eng, prompt, 2, o.context)
            sync(dev)
            t = time.perf_counter()
            eng.begin(s)
            run_pass(eng, s, check_stop)
            sync(dev)
            ms.append((time.perf_counter() - t) * 1e3)
            assert s.pass_index == 1 and len(s.generated) == 1, (s.pass_index, s.generated)
            del s
        res["prefill"] = dict(tokens=P, ms=summary(ms), method="Engine.begin + the pieces of pass 0 with "
                              "stops.check_stop after each, to the first token (in process)")
        log(TAG, f"prefill of {P} tokens: median {res['prefill']['ms']['median']} ms")

    if "decode" in parts:
        n = o.warmup_tokens + o.decode_tokens
        s = new_session(eng, prompt, n + 1, o.context)
        eng.begin(s)
        run_pass(eng, s, check_stop)          # prefill, untimed
        ms = []
        first_pos = last_pos = None
        for i in range(n):
            pos = s.input_pos                 # where this pass writes its K/V
            sync(dev)
            t = time.perf_counter()
            run_pass(eng, s, check_stop)
            sync(dev)
            if i >= o.warmup_tokens:
                ms.append((time.perf_counter() - t) * 1e3)
            if i == o.warmup_tokens:
                first_pos = pos
            last_pos = pos
        res["decode"] = dict(ms=summary(ms), first_position=first_pos, last_position=last_pos,
                             context=o.context, tokens_generated=len(s.generated),
                             method="Engine.advance_span + stops.check_stop per span (as Scheduler._run), one whole decode pass per token "
                                    f"(embed .. {args.n_layers} layers .. norm, lm_head, logits to the CPU, argmax, next embed), "
                                    "as Scheduler._run runs a session without breakpoints; in process, no gRPC")
        log(TAG, f"decode at position {first_pos}: median {res['decode']['ms']['median']} ms/token "
                 f"(p10 {res['decode']['ms']['p10']}, p90 {res['decode']['ms']['p90']})")
        del s
    if "overlap" in parts:
        measure_overlap(o, eng, args, res)
    del eng, model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def measure_overlap(o, eng, args, res) -> None:
    """What swaps cost the sessions computing meanwhile: one session's decode passes timed alone,
    then the same number with a swap-out and a swap-in of two other sessions' state (KV +
    activations, 1.7 GB each way for the 13B shape at 2048) always in flight on the copy streams."""
    import torch

    from djinn.runtime.host_pool import ALIGN, HostPool
    from djinn.runtime.stops import check_stop
    from djinn.runtime.swap import SessionMemory, Swapper

    dev, n = o.dev, o.decode_tokens
    s = new_session(eng, prompt_tokens(o.context - 2 * n - 4, args.vocab_size, salt=3), 2 * n + 3, o.context)
    eng.begin(s)
    run_pass(eng, s, check_stop)
    run_pass(eng, s, check_stop)
    kv_shape = (args.n_layers, 2, args.n_kv_heads, o.context, args.head_dim)
    item = torch.empty((), dtype=o.dt).element_size()
    mems = [SessionMemory(kv_shape, o.dt, 4 * o.context * args.dim * item) for _ in range(2)]
    pool = HostPool(2 * (mems[0].total_bytes + ALIGN), pin=dev.type == "cuda")
    sw = Swapper(dev, pool)
    for m in mems:
        sw.allocate(m)
        m.kv.normal_()
    mems[1].host_offset, mems[1].host_size = pool.reserve(mems[1].total_bytes)
    sw.swap_out(mems[1]) or sw.wait(mems[1])
    sync(dev)

    def passes(swapping: bool) -> tuple[list[float], int]:
        ms, moved, r = [], 0, 0
        for _ in range(n):
            if swapping and all(m.flight is None for m in mems):
                out_m, in_m = (mems[0], mems[1]) if r % 2 == 0 else (mems[1], mems[0])
                out_m.host_offset, out_m.host_size = pool.reserve(out_m.total_bytes)
                for rec in (sw.swap_out(out_m), sw.swap_in(in_m, wait=False)):   # in: as a prefetch (no wait)
                    moved += rec.nbytes if rec else 0   # (the CPU copies at once)
                r += 1
            sync_compute = torch.cuda.current_stream(dev).synchronize if dev.type == "cuda" else (lambda: None)
            sync_compute()
            t = time.perf_counter()
            run_pass(eng, s, check_stop)
            sync_compute()
            ms.append((time.perf_counter() - t) * 1e3)
            for m in mems:
                rec = sw.poll(m)
                moved += rec.nbytes if rec else 0
        for m in mems:
            rec = sw.wait(m)
            moved += rec.nbytes if rec else 0
        return ms, moved

    alone, _ = passes(False)
    busy, moved = passes(True)
    a, b = summary(alone)["median"], summary(busy)["median"]
    res["overlap"] = dict(alone_ms=summary(alone), swapping_ms=summary(busy), bytes_moved=moved,
                          slowdown_pct=round(100.0 * (b - a) / a, 2), position=s.input_pos,
                          method="one session's whole decode passes (as the decode part), the compute stream synchronised "
                                 "around each; alone, then with a swap-out and a swap-in (two other sessions, the scheduler's "
                                 "Swapper, both copy streams) started whenever none is in flight")
    log(TAG, f"decode alone {a} ms, while swapping {b} ms ({res['overlap']['slowdown_pct']} %), "
             f"{moved / 1e9:.1f} GB moved")
    pool.close()


def measure_swap(o, res) -> None:
    import torch

    from djinn.model.config import named_config
    from djinn.runtime.host_pool import ALIGN, HostPool
    from djinn.runtime.swap import HOST, SessionMemory, Swapper

    dev, dtype, cuda = o.dev, o.dt, o.dev.type == "cuda"
    a = named_config(o.model)
    item = torch.empty((), dtype=dtype).element_size()
    kv_shape = (a.n_layers, 2, a.n_kv_heads, o.context, a.head_dim)
    act_cap = 4 * o.context * a.dim * item               # ServerState.act_bytes
    T = o.context - 8                                    # a session paused at a layer of its prefill
    mems = [SessionMemory(kv_shape, dtype, act_cap) for _ in range(2)]
    region = mems[0].total_bytes
    t = time.perf_counter()
    pool = HostPool(2 * (region + ALIGN), pin=cuda)
    res_pool_s = time.perf_counter() - t
    sw = Swapper(dev, pool)
    refs = []
    for i, m in enumerate(mems):
        m.host_offset, m.host_size = pool.reserve(m.total_bytes)
        sw.allocate(m)
        g = torch.Generator(device=dev).manual_seed(100 + i)
        m.kv.normal_(generator=g)
        m.acts = {"hidden": torch.randn(T, a.dim, device=dev, dtype=dtype, generator=g)}
        refs.append((m.kv.clone(), m.acts["hidden"].clone()))
    offsets = [m.host_offset for m in mems]             # the regions (a swap-in gives its region back)
    rec = sw.swap_out(mems[1]) or sw.wait(mems[1])       # B starts on the host
    assert mems[1].location == HOST
    nbytes = rec.nbytes
    log(TAG, f"swap: {nbytes / 1e9:.3f} GB per session (KV {mems[0].kv_bytes / 1e9:.3f} GB + hidden [{T}, {a.dim}]), "
             f"host pool of {pool.nbytes / 1e9:.2f} GB {'pinned' if cuda else 'plain RAM'} in {res_pool_s:.1f} s")

    pair_ms, out_ms, in_ms = [], [], []
    for r in range(o.swap_reps + 1):                    # the first one is a warm-up
        out_m, in_m = (mems[0], mems[1]) if r % 2 == 0 else (mems[1], mems[0])
        sync(dev)
        t = time.perf_counter()
        if out_m.host_offset < 0:                        # Scheduler._region_for: a region on the way out
            out_m.host_offset, out_m.host_size = pool.reserve(out_m.total_bytes)
        ro = sw.swap_out(out_m)                          # Scheduler._make_resident: evict, then bring in
        ri = sw.swap_in(in_m)
        ro = ro or sw.wait(out_m)
        ri = ri or sw.wait(in_m)
        sync(dev)
        if r:
            pair_ms.append((time.perf_counter() - t) * 1e3)
            out_ms.append(ro.ms)
            in_ms.append(ri.ms)
    # both resident again, then check every byte came back
    for m in mems:
        if m.location == HOST:
            sw.swap_in(m)
            sw.wait(m)
    ok = all(torch.equal(m.kv, kv) and torch.equal(m.acts["hidden"], h) for m, (kv, h) in zip(mems, refs))
    del refs

    # plain pinned copies of the same bytes, between the same host regions and fresh device buffers
    d = [torch.empty(nbytes, dtype=torch.uint8, device=dev) for _ in range(2)]
    h = [pool.view(off, torch.uint8, (nbytes,)) for off in offsets]
    for m in mems:
        sw.free(m)
    gc.collect()
    if cuda:
        s1, s2 = torch.cuda.Stream(dev), torch.cuda.Stream(dev)

        def d2h():
            with torch.cuda.stream(s1):
                h[0].copy_(d[0], non_blocking=True)

        def h2d():
            with torch.cuda.stream(s2):
                d[1].copy_(h[1], non_blocking=True)

        def both():
            d2h()
            h2d()
    else:
        from concurrent.futures import ThreadPoolExecutor

        ex = ThreadPoolExecutor(2)
        d2h = lambda: h[0].copy_(d[0])
        h2d = lambda: d[1].copy_(h[1])

        def both():
            for f in [ex.submit(d2h), ex.submit(h2d)]:
                f.result()

    def timed(fn):
        ms = []
        for r in range(o.swap_reps + 1):
            sync(dev)
            t = time.perf_counter()
            fn()
            sync(dev)
            if r:
                ms.append((time.perf_counter() - t) * 1e3)
        return ms

    ceil_ms, one_out, one_in = timed(both), timed(d2h), timed(h2d)
    if not cuda:
        ex.shutdown()
    res["swap"] = dict(
        bytes_each_way=nbytes, pair_ms=summary(pair_ms), pair_out_copy_ms=summary(out_ms), pair_in_copy_ms=summary(in_ms),
        ceiling_pair_ms=summary(ceil_ms), one_out_ms=summary(one_out), one_in_ms=summary(one_in),
        round_trip_identical=ok, host_pool_pin_s=round(res_pool_s, 2),
        method=("pair: wall time (synchronize before and after) of Swapper.swap_out(A); Swapper.swap_in(B); then "
                "waiting for both, as the scheduler evicts one session to bring one back; copy ms per direction are the "
                "Swapper's own CUDA-event figures. ceiling: plain copy_(non_blocking) of the same byte count between "
                "the same pinned host regions and device buffers, D2H on one stream and H2D on another at once; one: "
                "each direction alone" + ("" if cuda else " (CPU: RAM to RAM; the ceiling's two copies on two threads)")))
    log(TAG, f"swap pair median {res['swap']['pair_ms']['median']} ms; ceiling both at once "
             f"{res['swap']['ceiling_pair_ms']['median']} ms; one direction out {res['swap']['one_out_ms']['median']} / "
             f"in {res['swap']['one_in_ms']['median']} ms; round trip identical: {ok}")
    del d, h, sw
    if hasattr(pool, "close"):       # a pool that pins with cudaHostRegister unregisters here
        pool.close()
    del pool
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--decode-tokens", type=int, default=30)
    p.add_argument("--warmup-tokens", type=int, default=2)
    p.add_argument("--prefill-reps", type=int, default=5)
    p.add_argument("--swap-reps", type=int, default=6)
    p.add_argument("--parts", default="decode,prefill,swap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-rows", type=int, default=16, help="Engine(batch_rows=...), as the server's --batch-rows")
    p.add_argument("--cuda-graphs", default="on", choices=["on", "off"])
    p.add_argument("--out", required=True)
    o = p.parse_args()
    alloc = set_alloc_conf(o.device)
    use_server_package()
    import torch

    torch.set_grad_enabled(False)
    o.dev = torch.device("cuda", 0) if o.device == "cuda" else torch.device("cpu")
    if o.dev.type == "cuda":
        torch.cuda.set_device(o.dev)
    o.dt = {"auto": torch.bfloat16 if o.device == "cuda" else torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16, "float32": torch.float32}[o.dtype]
    parts = set(x for x in o.parts.split(",") if x)
    res: dict = dict(batch_rows=o.batch_rows, cuda_graphs=o.cuda_graphs, torch=torch.__version__, dtype=str(o.dt).replace("torch.", ""), pytorch_cuda_alloc_conf=alloc,
                     device_name=torch.cuda.get_device_name(o.dev) if o.dev.type == "cuda" else None, errors={})
    if parts & {"decode", "prefill", "overlap"}:
        try:
            measure_engine(o, parts, res)
        except Exception as e:  # noqa: BLE001 - reported in the JSON, the other parts go on
            traceback.print_exc()
            res["errors"]["decode"] = res["errors"]["prefill"] = f"{type(e).__name__}: {e}"
            gc.collect()
            if o.dev.type == "cuda":
                torch.cuda.empty_cache()
    if "swap" in parts:
        try:
            measure_swap(o, res)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            res["errors"]["swap"] = f"{type(e).__name__}: {e}"
    if o.dev.type == "cuda":
        res["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(o.dev)
    with open(o.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
