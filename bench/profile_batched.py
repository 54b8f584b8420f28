"""Where the time of N sessions generating at once goes (profile before optimising batching).

A server (--batch-rows R) runs N sessions created back to back, as h200_perf's `batched` part
does, while py-spy samples the server's threads (if --py-spy names its binary). Written:
  wall_s, tokens_per_s      as the batched part measures them
  timeline                  from every event's server timestamp: when the last prefill ended
                            (first TOKEN of every session), how many passes ran, gaps between them
  worker_top_inclusive      py-spy: share of the worker thread's samples under each function
  worker_top_self           and in each function itself (the leaf frame)

  PYTHONPATH=server python bench/profile_batched.py --device cuda --py-spy /tmp/pyspy/bin/py-spy --out /tmp/pb.json
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf_server as ps  # noqa: E402
from perf_common import log  # noqa: E402

K = ps.pb.EventKind


def top(counter: collections.Counter, total: int, n: int = 40) -> list:
    return [(name, round(100.0 * c / max(1, total), 1)) for name, c in counter.most_common(n)]


def read_spy(path: str) -> dict:
    """py-spy's raw (collapsed) stacks: 'thread;frame;frame... count'. Worker thread only."""
    incl, self_, total = collections.Counter(), collections.Counter(), 0
    threads = collections.Counter()
    if not os.path.exists(path):
        return dict(error="no py-spy output")
    for line in open(path):
        line = line.rstrip()
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        threads[frames[0]] += int(n)
        if "_loop (djinn/runtime/scheduler.py" not in stack:
            continue
        total += int(n)
        names = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f for f in frames[1:]]
        for name in set(names):
            incl[name] += int(n)
        if names:
            self_[frames[-1]] += int(n)
    return dict(worker_samples=total, threads=threads.most_common(12), worker_top_inclusive=top(incl, total),
                worker_top_self=top(self_, total))


def timeline(c: ps.Client, ids: list[int]) -> dict:
    firsts, tokens = [], []
    created = []
    for sid in ids:
        evs = [ev for _, ev in c.feed.events(sid)]
        created += [ev.time for ev in evs if ev.kind == K.EVENT_KIND_CREATED]
        ts = [ev.time for ev in evs if ev.kind == K.EVENT_KIND_TOKEN]
        if ts:
            firsts.append(ts[0])
            tokens += ts
    if not tokens:
        return {}
    t0 = min(created) if created else min(tokens)
    times = sorted(set(round(t, 6) for t in tokens))
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return dict(first_create_to_last_prefill_s=round(max(firsts) - t0, 3), first_create_to_last_token_s=round(max(tokens) - t0, 3),
                distinct_token_times=len(times), median_gap_ms=round(1e3 * gaps[len(gaps) // 2], 3) if gaps else None,
                p90_gap_ms=round(1e3 * gaps[int(len(gaps) * 0.9)], 3) if gaps else None)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=16)
    p.add_argument("--batch-rows", type=int, default=16)
    p.add_argument("--cuda-graphs", default="on")
    p.add_argument("--host-pool-gb", type=float, default=4)
    p.add_argument("--ready-timeout-s", type=float, default=600)
    p.add_argument("--py-spy", default="")
    p.add_argument("--server-args", default="")
    p.add_argument("--out", required=True)
    o = p.parse_args()
    o.alloc_conf = "expandable_segments:True" if o.device == "cuda" else None
    srv, ready_s = ps.start_server(o, *o.server_args.split(), name="the profiled server")
    res: dict = dict(command=sys.argv, server_command=srv.command, ready_s=round(ready_s, 2), ready=srv.ready,
                     sessions=o.sessions, prompt_tokens=o.prompt_tokens, gen_tokens=o.gen_tokens, batch_rows=o.batch_rows)
    try:
        c = ps.Client(srv.address)
        small = argparse.Namespace(**vars(o))
        small.sessions = 4
        ps.throughput(c, small, batched=True)   # warm-up
        spy = None
        if o.py_spy:
            raw = os.path.splitext(o.out)[0] + "-pyspy.txt"
            spy = subprocess.Popen([o.py_spy, "record", "--pid", str(srv.proc.pid), "--rate", "400", "--format", "raw",
                                    "--threads", "--nonblocking", "--output", raw], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            time.sleep(1.0)
        seq0 = c.info.event_seq
        d = ps.throughput(c, o, batched=True)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                out, _ = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                out = ""
            res["py_spy_output"] = (out or "")[-1500:]
            res.update(read_spy(raw))
        res.update(wall_s=d["wall_s"], tokens_per_s=d["tokens_per_s"], tokens=d["tokens"])
        # the sessions of the timed run: ids above the warm-up's
        ids = sorted(sid for sid in c.feed.by_session if sid and any(ev.seq > seq0 for _, ev in c.feed.events(sid)))
        res["timeline"] = timeline(c, ids[-o.sessions:])
        d2 = ps.throughput(c, o, batched=True)
        res["unprofiled"] = dict(wall_s=d2["wall_s"], tokens_per_s=d2["tokens_per_s"])
        c.close()
    finally:
        srv.stop()
    with open(o.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k not in ("ready",)}, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
