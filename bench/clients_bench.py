"""Many connected clients: N clients (default 200), each with its own channel holding an Events
and a Telemetry stream open (as a VS Code window with the VRAM panel does), then the latency
of unary calls (GetInfo, ListSessions, GetSession) from one more client: p50/p99 over 500 calls
each. Also with 20 and 0 clients for comparison, and with N clients while a session generates
(its TOKEN events fanned out to every subscriber of its user). Real server subprocess, CPU,
tiny-40l, loopback. Writes bench/results/clients-cpu-DATE.json. Target: p99 < 50 ms at N=200.

The stream holders run in their own processes (grpc.aio, 50 channels each), so their reading
does not compete for the measuring client's interpreter lock.

    .venv/bin/python bench/clients_bench.py [--clients 200] [--calls 500]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server", "tests"))

import grpc  # noqa: E402

import loadgen  # noqa: E402
from loadgen import pb  # noqa: E402

PER_PROCESS = 50


def holder(address: str, specs: list, interval_ms: float, up, stop, out) -> None:
    """A process holding len(specs) clients, each its own channel with Events + Telemetry open."""
    from djinn.v1 import djinn_pb2_grpc as pb_grpc

    async def run():
        counts = {"events": 0, "samples": 0, "errors": 0, "error_codes": {}}

        async def eat(call, key):
            try:
                async for _ in call:
                    counts[key] += 1
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    counts["errors"] += 1
                    counts["error_codes"][e.code().name] = counts["error_codes"].get(e.code().name, 0) + 1
            except asyncio.CancelledError:
                pass

        held = []
        for token, cid in specs:
            ch = grpc.aio.insecure_channel(address)
            stub = pb_grpc.DjinnStub(ch)
            md = loadgen.metadata(token, cid)
            ev = stub.Events(pb.EventsRequest(), metadata=md)
            tel = stub.Telemetry(pb.TelemetryRequest(interval_ms=interval_ms), metadata=md)
            held.append((ch, ev, tel, [asyncio.ensure_future(eat(ev, "events")),
                                       asyncio.ensure_future(eat(tel, "samples"))]))
        up.put(len(held))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for ch, ev, tel, _ in held:
            ev.cancel()
            tel.cancel()
        await asyncio.gather(*[t for h in held for t in h[3]], return_exceptions=True)
        for h in held:
            await h[0].close()
        out.put(counts)

    asyncio.run(run())


def measure(conn: loadgen.Conn, calls: int, session_id: int) -> dict:
    reqs = [("GetInfo", pb.GetInfoRequest()), ("ListSessions", pb.ListSessionsRequest()),
            ("GetSession", pb.SessionRef(session_id=session_id))]
    for rpc, req in reqs * 10:                     # warm-up
        conn.call(rpc, req)
    lat: dict[str, list[float]] = {r: [] for r, _ in reqs}
    bad = 0
    for _ in range(calls):
        for rpc, req in reqs:
            t0 = time.perf_counter()
            st, _, _ = conn.call(rpc, req)
            lat[rpc].append((time.perf_counter() - t0) * 1e3)
            bad += st != "OK"
    every = [x for v in lat.values() for x in v]
    return dict(rpc={k: loadgen.lat_summary(v) for k, v in lat.items()}, all=loadgen.lat_summary(every), not_ok=bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--compare", default="0,20", help="other client counts measured (comma separated)")
    ap.add_argument("--calls", type=int, default=500, help="calls of each RPC per phase")
    ap.add_argument("--telemetry-ms", type=float, default=200, help="each client's Telemetry interval (the "
                    "extension's djinn.telemetryIntervalMs default is 200)")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--target-p99-ms", type=float, default=50)
    ap.add_argument("--no-busy", action="store_true", help="skip the phase with a generating session")
    ap.add_argument("--out", default=None, help="default bench/results/clients-cpu-DATE.json")
    a = ap.parse_args()
    out = a.out or os.path.join(HERE, "results", f"clients-cpu-{time.strftime('%Y-%m-%d')}.json")
    users = loadgen.make_users(a.users, seed=3)
    admin = users[-1]
    people = users[:-1]
    tmp = tempfile.mkdtemp(prefix="djinn-clients-")
    phases_n = sorted({int(x) for x in a.compare.split(",") if x.strip()} | {a.clients})
    ctx = mp.get_context("spawn")
    result = dict(command=" ".join([sys.executable] + sys.argv), git_commit=loadgen.git_commit(),
                  host=dict(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version()),
                  telemetry_interval_ms=a.telemetry_ms, calls_per_rpc=a.calls, phases=[])
    with loadgen.ServerProcess("--tokens-file", loadgen.write_tokens_file(os.path.join(tmp, "tokens"), users),
                               "--lease-s", "600", log_path=os.path.join(tmp, "server.log")) as srv:
        result["server_command"] = srv.command
        conn = loadgen.Conn(srv.address, people[0].token, "bench-measure")
        # the measuring user has a few sessions to list: paused ones and finished ones
        ids = []
        for i in range(6):
            st, s, det = conn.call("CreateSession", pb.CreateSessionRequest(
                prompt_tokens=[5 + i, 9, 13, 200], max_new_tokens=2, context=32,
                breakpoints=[pb.Breakpoint(id=1, layer=20)] if i % 2 else []))
            assert st == "OK", det
            ids.append(s.id)
        time.sleep(1.0)
        plan = [(n, False) for n in phases_n] + ([] if a.no_busy else [(a.clients, True)])
        for n, busy in plan:
            specs = [(people[i % len(people)].token, f"bench-holder-{i}") for i in range(n)]
            up, done, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
            procs = [ctx.Process(target=holder, args=(srv.address, specs[i:i + PER_PROCESS], a.telemetry_ms, up, stop,
                                                      done), daemon=True) for i in range(0, n, PER_PROCESS)]
            for p in procs:
                p.start()
            for _ in procs:
                up.get(timeout=120)
            deadline = time.monotonic() + 60
            sample = loadgen.telemetry_sample(srv.address, admin, "bench-check")
            while sample.clients_connected < n and time.monotonic() < deadline:
                time.sleep(0.2)
                sample = loadgen.telemetry_sample(srv.address, admin, "bench-check")
            time.sleep(1.0)    # let every stream settle into its steady state
            gen = None
            if busy:
                st, s, det = conn.call("CreateSession", pb.CreateSessionRequest(
                    prompt_tokens=[7, 8, 9], max_new_tokens=1000, context=1010, label="busy"))
                assert st == "OK", det
                gen = s.id
                time.sleep(0.5)
            t0 = time.monotonic()
            m = measure(conn, a.calls, ids[1])
            m_s = time.monotonic() - t0
            during = loadgen.telemetry_sample(srv.address, admin, "bench-check")
            if gen is not None:
                info = conn.call("GetSession", pb.SessionRef(session_id=gen))[1]
                m["busy_session_tokens_during_measurement"] = len(info.generated_tokens) if info else None
                conn.call("CloseSession", pb.SessionRef(session_id=gen))
            stop.set()
            counts = [done.get(timeout=60) for _ in procs]
            for p in procs:
                p.join(30)
            phase = dict(clients=n, busy=busy, clients_connected=during.clients_connected,
                         open_streams=during.open_streams, measure_seconds=round(m_s, 2),
                         server_rss_bytes=srv.rss_bytes(), **m,
                         holders=dict(events=sum(c["events"] for c in counts), samples=sum(c["samples"] for c in counts),
                                      errors=sum(c["errors"] for c in counts)))
            result["phases"].append(phase)
            r = m["rpc"]
            print(f"[clients] {n:>4} clients{' + generating' if busy else ''} ({during.open_streams} streams open): "
                  + ", ".join(f"{k} p50 {v['p50_ms']:.2f} p99 {v['p99_ms']:.2f} ms" for k, v in r.items())
                  + f"; all p99 {m['all']['p99_ms']:.2f} ms", flush=True)
        conn.close()
    top = [p for p in result["phases"] if p["clients"] == a.clients and not p["busy"]][0]
    result["target"] = dict(clients=a.clients, p99_ms_limit=a.target_p99_ms, p99_ms=top["all"]["p99_ms"],
                            met=top["all"]["p99_ms"] < a.target_p99_ms and top["not_ok"] == 0
                            and top["clients_connected"] >= a.clients)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"[clients] target p99 < {a.target_p99_ms} ms with {a.clients} clients: "
          f"{'met' if result['target']['met'] else 'NOT met'} ({top['all']['p99_ms']:.2f} ms); wrote {out}")
    return 0 if result["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
