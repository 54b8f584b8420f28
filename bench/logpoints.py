"""Logpoints: how many hits per second one session sustains, and what a hit costs.

One session generates --tokens tokens, with logpoints at every layer (40 per pass on tiny-40l)
or at every stop point (120 per pass), against the same generation without any. Each hit's
line is formatted on the server and received by a gRPC client; a run counts only when every
line arrived, in order, and the tokens equal the run without logpoints.

    python3 bench/logpoints.py [--model tiny-40l] [--device cpu] [--tokens 30] [--repeats 3] [--out PATH]

Starts a real server process (`python -m djinn.server.server_main`, as tests/loadgen.py does)
and measures over gRPC: hits/s = lines received / wall time from CreateSession to the last
line; per-hit cost = (time with logpoints - time without) / hits, in wall time and in the
server process's CPU time (/proc/PID/stat: less sensitive to other load on the machine).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "server"), os.path.join(HERE, "..", "server", "tests")]

from djinn.v1 import djinn_pb2 as pb  # noqa: E402
from harness import Client  # noqa: E402
from loadgen import ServerProcess  # noqa: E402

POINTS = {"layers": (pb.STOP_POINT_LAYER,), "points": (pb.STOP_POINT_LAYER, pb.STOP_POINT_ATTN, pb.STOP_POINT_MLP)}
MESSAGES = {"scalars": "L{layer} t{token}", "tensor": "L{layer} t{token} |h|={norm(hidden)} max={max(abs(hidden))}"}


def commit() -> str:
    from perf_common import code_commit
    return code_commit()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(c: Client, pid: int, prompt: list[int], tokens: int, n_layers: int, where: str, message: str):
    """({wall: s from create to the last line received, server: s from create to the server's FINISHED,
    cpu: the server's CPU s meanwhile}, lines, generated tokens)."""
    bps = [] if not message else [pb.Breakpoint(id=i + 1, layer=i // len(POINTS[where]), point=POINTS[where][i % len(POINTS[where])],
                                                log_message=message) for i in range(n_layers * len(POINTS[where]))]
    t0, u0, cpu0 = time.perf_counter(), time.time(), cpu_seconds(pid)
    s = c.CreateSession(pb.CreateSessionRequest(prompt_tokens=prompt, max_new_tokens=tokens, breakpoints=bps))
    lines, last = [], t0
    while True:
        ev = c.wait_any((pb.EVENT_KIND_OUTPUT, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_ERROR),
                        s.id, timeout=600)
        last = time.perf_counter()
        if ev.kind == pb.EVENT_KIND_OUTPUT:
            lines.append(ev.text)
            continue
        if ev.kind != pb.EVENT_KIND_FINISHED:
            raise RuntimeError(f"session {s.id}: {pb.EventKind.Name(ev.kind)} {ev.text}")
        c.backlog = [e for e in c.backlog if e.session_id != s.id]   # token events: not needed
        t = dict(wall=last - t0, server=ev.time - u0, cpu=cpu_seconds(pid) - cpu0)
        return t, lines, list(ev.session.generated_tokens)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny-40l")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokens", type=int, default=30, help="tokens the session generates (passes)")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="")
    a = p.parse_args()
    load0 = list(os.getloadavg())   # other work on the machine: the runs' spread says how much it mattered
    srv = ServerProcess("--host-pool-gb", "1", "--max-context", a.prompt + a.tokens + 8, model=a.model, device=a.device)
    c = Client.connect(srv.address)
    info = c.GetInfo(pb.GetInfoRequest())
    L = info.model.n_layers
    try:
        prompt = [3 + (i * 7) % 500 for i in range(a.prompt)]
        run(c, srv.pid, prompt, 2, L, "layers", MESSAGES["tensor"])            # warm-up: kernels, formatting
        base_times, base_tokens = [], None
        for _ in range(a.repeats):
            t, _, toks = run(c, srv.pid, prompt, a.tokens, L, "layers", "")
            base_times.append(t)
            base_tokens = toks
        med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
        base = {k: med(base_times, k) for k in ("wall", "server", "cpu")}
        best = min(r["wall"] for r in base_times)
        cases = []
        for where in POINTS:
            for kind, message in MESSAGES.items():
                times, ok = [], True
                for _ in range(a.repeats):
                    t, lines, toks = run(c, srv.pid, prompt, a.tokens, L, where, message)
                    want = a.tokens * L * len(POINTS[where])
                    ok &= len(lines) == want and toks == base_tokens
                    ok &= all(line.startswith(f"L{(i // len(POINTS[where])) % L} t{i // (L * len(POINTS[where]))}")
                              for i, line in enumerate(lines))
                    times.append(t)
                hits = a.tokens * L * len(POINTS[where])
                t = {k: med(times, k) for k in ("wall", "server", "cpu")}
                cases.append(dict(
                    where=f"every {'layer' if where == 'layers' else 'stop point'} ({len(POINTS[where])} per layer)",
                    message=message, hits=hits, runs=[{k: round(v, 4) for k, v in r.items()} for r in times],
                    median_wall_s=round(t["wall"], 4), median_server_s=round(t["server"], 4),
                    hits_per_s=round(hits / t["wall"], 1), hits_per_s_server=round(hits / t["server"], 1),
                    cost_per_hit_us=round((t["wall"] - base["wall"]) / hits * 1e6, 1),
                    hits_per_s_best=round(hits / min(r["wall"] for r in times), 1),
                    cost_per_hit_us_best=round((min(r["wall"] for r in times) - best) / hits * 1e6, 1),
                    cpu_per_hit_us=round((t["cpu"] - base["cpu"]) / hits * 1e6, 1),
                    every_line_arrived_in_order_and_tokens_unchanged=bool(ok), example_line=lines[-1]))
                x = cases[-1]
                print(f"{x['where']:32} {kind:8} {x['hits_per_s']:8.1f} hits/s (server {x['hits_per_s_server']:8.1f})  "
                      f"best {x['hits_per_s_best']:8.1f} hits/s {x['cost_per_hit_us_best']:7.1f} us/hit  "
                      f"{x['cost_per_hit_us']:7.1f} us/hit wall  {x['cpu_per_hit_us']:7.1f} us/hit CPU  ok={ok}", flush=True)
        out = dict(
            command=" ".join([sys.executable] + sys.argv), commit=commit(), date=datetime.date.today().isoformat(),
            server_command=srv.command, device=info.device_name, torch=info.torch_version, model=a.model,
            cpu_count=os.cpu_count(), load_average_at_start=load0, load_average_at_end=list(os.getloadavg()),
            tokens=a.tokens, prompt_tokens=a.prompt, repeats=a.repeats,
            without_logpoints=[{k: round(v, 4) for k, v in r.items()} for r in base_times],
            without_logpoints_median_wall_s=round(base["wall"], 4),
            passes_per_s_without=round(a.tokens / base["wall"], 2), cases=cases,
            note="hits_per_s: lines received by a gRPC client (this process) from a server process on the same "
                 "machine, from CreateSession to the last line, model work included; hits_per_s_server: to the "
                 "server's FINISHED event; cost_per_hit_us: wall time a hit adds to the generation (median runs); "
                 "cpu_per_hit_us: server process CPU time a hit adds (its worker and its event loop), less sensitive "
                 "to other load on the machine; *_best: from the fastest run of each case (the machine's other load "
                 "only ever slows a run down)")
        print(json.dumps(out, indent=2))
        path = a.out or os.path.join(HERE, "results", f"logpoints-{a.device}-{out['date']}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2, ensure_ascii=False)
        return 0 if all(x["every_line_arrived_in_order_and_tokens_unchanged"] for x in cases) else 1
    finally:
        c.drop()
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
