"""Fair turns: B's next stop while A generates, against B alone and one pass of A.

A session B is paused at a breakpoint; session A generates N tokens with no breakpoints; B is
continued. Before fair turns, A kept the worker until it finished (H200, 13B: 20.3 s instead of
0.23 s). Target: B's next stop within 2 x its time alone + one forward pass of A.

    python3 bench/fair_turns.py [--model llama-2-13b] [--device auto] [--out bench/results/fair-turns-DATE.json]

Runs a real Djinn server in this process (asyncio gRPC on loopback) and measures over gRPC.
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
from harness import Client, InProcessServer  # noqa: E402
from djinn.server.state import Options, ServerState  # noqa: E402


def commit() -> str:
    from perf_common import code_commit
    return code_commit()


def b_next_stop(c: Client, b_id: int) -> float:
    t0 = time.perf_counter()
    c.Continue(pb.SessionRef(session_id=b_id))
    c.wait(pb.EVENT_KIND_STOPPED, b_id, timeout=600)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny-40l")
    p.add_argument("--device", default="auto")
    p.add_argument("--tokens", type=int, default=300, help="tokens A generates")
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens of each session")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quantum-ms", type=float, default=0.0, help="0 = turns of one forward pass (the default)")
    p.add_argument("--out", default="")
    a = p.parse_args()
    opts = Options(model=a.model, device=a.device, budget="80" if a.device != "cpu" else "8", host_pool_gb=4.0,
                   max_context=a.prompt + a.tokens + 8, quantum_ms=a.quantum_ms)
    st = ServerState(opts)
    srv = InProcessServer(st)
    c = Client.connect(srv.address)
    try:
        prompt = [3 + (i * 7) % 500 for i in range(a.prompt)]
        b = c.create(prompt, max_new=a.repeats * 2 + 4, layers=(10,))
        c.wait(pb.EVENT_KIND_STOPPED, b.id, timeout=600)
        b_next_stop(c, b.id)                                   # warm-up
        alone = [b_next_stop(c, b.id) for _ in range(a.repeats)]
        gen = c.create(prompt, max_new=a.tokens)
        c.wait(pb.EVENT_KIND_TOKEN, gen.id, timeout=600)       # A is generating
        shared = [b_next_stop(c, b.id) for _ in range(a.repeats)]
        info = c.GetSession(pb.SessionRef(session_id=gen.id))
        a_running = info.state == pb.SESSION_STATE_RUNNING
        tok = [e for e in c.backlog if e.kind == pb.EVENT_KIND_TOKEN and e.session_id == gen.id]
        gaps = [y.time - x.time for x, y in zip(tok, tok[1:])]
        a_pass = statistics.median(gaps) if gaps else float("nan")
        c.CloseSession(pb.SessionRef(session_id=gen.id))
        t_alone, t_shared = statistics.median(alone), statistics.median(shared)
        limit = 2 * t_alone + a_pass
        out = dict(
            command=" ".join([sys.executable] + sys.argv), commit=commit(), date=datetime.date.today().isoformat(),
            device=st.device_name(), torch=__import__("torch").__version__, model=a.model, quantum_ms=a.quantum_ms,
            prompt_tokens=a.prompt, a_tokens=a.tokens, repeats=a.repeats,
            b_next_stop_alone_ms=[round(x * 1e3, 2) for x in alone],
            b_next_stop_with_a_ms=[round(x * 1e3, 2) for x in shared],
            b_alone_median_ms=round(t_alone * 1e3, 2), b_with_a_median_ms=round(t_shared * 1e3, 2),
            a_pass_median_ms=round(a_pass * 1e3, 2) if gaps else None, limit_ms=round(limit * 1e3, 2),
            a_still_running_when_measured=a_running, a_tokens_done=len(info.generated_tokens),
            target_met=bool(t_shared <= limit and a_running))
        print(json.dumps(out, indent=2))
        path = a.out or os.path.join(HERE, "results", f"fair-turns-{st.device.type}-{out['date']}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        return 0 if out["target_met"] else 1
    finally:
        srv.stop()
        st.shutdown()


if __name__ == "__main__":
    sys.exit(main())
