"""Soak: the random multi-user load of server/tests/test_load.py, for a given time, against a real
server subprocess (CPU, tiny-40l). Writes bench/results/soak-cpu-DATE.json: counts per action and
status, p50/p99 per RPC, sessions lost (must be 0), memory at the start and the end (server RSS,
KV, host pool) with an RSS timeline, the exact command and the git commit.

    .venv/bin/python bench/soak.py --seconds 600
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server", "tests"))

import loadgen  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--clients-per-user", type=int, default=5)
    ap.add_argument("--live-per-client", type=int, default=3)
    ap.add_argument("--lease-s", type=float, default=4.0)
    ap.add_argument("--abandoners", type=int, default=2)
    ap.add_argument("--budget-gb", default="0.046", help="weights + about 12 sessions of context 32: swaps under load")
    ap.add_argument("--prompt-pool", type=int, default=64, help="prompts drawn from a fixed pool: one reference run "
                    "(in this process, with the server's torch thread count: the bits depend on it) per prompt")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable), "
                    "e.g. --server-arg=--replay-mb=1")
    ap.add_argument("--out", default=None, help="default bench/results/soak-cpu-DATE.json")
    a = ap.parse_args()
    out = a.out or os.path.join(HERE, "results", f"soak-cpu-{time.strftime('%Y-%m-%d')}.json")
    users = loadgen.make_users(a.users + 1, seed=a.seed)
    away = users[a.users]
    tmp = tempfile.mkdtemp(prefix="djinn-soak-")
    args = ["--vram-budget-gb", a.budget_gb, "--max-context", "64", "--lease-s", str(a.lease_s),
            "--tokens-file", loadgen.write_tokens_file(os.path.join(tmp, "tokens"), users), *a.server_arg]
    cfg = loadgen.LoadConfig(clients_per_user=a.clients_per_user, sessions=0, seconds=a.seconds,
                             live_per_client=a.live_per_client, prompt_pool=a.prompt_pool, seed=a.seed,
                             abandoners=a.abandoners)
    t0 = time.time()
    commit = loadgen.git_commit()          # of the code the server starts with
    with loadgen.ServerProcess(*args, log_path=os.path.join(tmp, "server.log")) as srv:
        print(f"[soak] server {srv.address} pid {srv.pid}; {a.seconds:.0f} s of load", flush=True)
        result = loadgen.run_load(srv, users, cfg, lease_s=a.lease_s, away=away,
                                  log=lambda line: print(line, flush=True))
        server_command = srv.command
    rc = srv.proc.returncode
    bad = loadgen.failures(result)
    result.update(
        command=" ".join([os.path.relpath(sys.executable, os.getcwd()) if sys.executable.startswith(os.getcwd())
                          else sys.executable] + sys.argv),
        server_command=server_command, server_exit_code=rc, git_commit=commit,
        git_commit_at_end=loadgen.git_commit(),
        host=dict(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version()),
        wall_seconds=round(time.time() - t0, 1), sessions_lost=len(result["lost"]), failures=bad[:200],
        failure_count=len(bad), passed=not bad and rc == 0)
    result.pop("latency_table", None)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    lat = result["latency_ms"]
    print(f"{'rpc':<16}{'n':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for k, v in lat.items():
        print(f"{k:<16}{v['n']:>8}{v['p50_ms']:>10.2f}{v['p99_ms']:>10.2f}")
    print(f"[soak] sessions {result['sessions']}; lost {result['sessions_lost']}; failures {len(bad)}; "
          f"memory start {result['memory_start']} end {result['memory_end']}; wrote {out}")
    for line in bad[:20]:
        print("  " + line)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
