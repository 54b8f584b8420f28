"""Many users, many windows, 200 sessions, random debugger actions against one real server
subprocess (CPU, tiny-40l, loopback). Checks: no unexpected status, no lost or corrupted
session (each unwritten one ends with the tokens of an uninterrupted run, and every
norm(hidden) read at a stop equals the uninterrupted run's bit for bit), abandoned sessions
closed by their lease, and every byte of KV and host pool given back at the end.

The per-RPC latency table is printed; DJINN_LOAD_JSON=path writes the whole result as JSON.
"""
import json
import os

from loadgen import LoadConfig, ServerProcess, failures, make_users, run_load, server_supports, write_tokens_file

LEASE_S = 4.0
# weights (29.6 MB) + room for about 12 sessions of context 32 (1.38 MB each): the 60 or so
# sessions alive at once must take turns on the "device", so swaps happen under the load.
BUDGET_GB = "0.046"


def test_two_hundred_sessions_of_four_users_twenty_windows(tmp_path, capsys):
    multi = server_supports("--tokens-file")
    users = make_users(5, seed=7)          # u0..u3 do the load; u4 only abandons sessions; ops is admin
    away = users[4]
    args = ["--vram-budget-gb", BUDGET_GB, "--max-context", "64"]
    if multi:
        args += ["--tokens-file", write_tokens_file(tmp_path / "tokens", users), "--lease-s", str(LEASE_S)]
    else:   # a server from before owners: one token for all, ownership not checked
        for u in users:
            u.token = users[0].token
        args += ["--token", users[0].token]
    cfg = LoadConfig(clients_per_user=5, sessions=200, check_owners=multi, abandoners=1 if multi else 0)
    with ServerProcess(*args, log_path=str(tmp_path / "server.log")) as srv:
        result = run_load(srv, users, cfg, lease_s=LEASE_S if multi else 0.0, away=away if multi else None)
        result["command"] = srv.command
        alive = srv.alive()
    with capsys.disabled():
        print(f"\n[load] {result['config']['clients']} clients, {result['sessions'].get('created', 0)} sessions in "
              f"{result['load_seconds']} s, {result['rpc_calls']} RPCs; sessions {result['sessions']}")
        print(result["latency_table"])
        print(f"[load] telemetry peaks {result['telemetry_peaks']}; lease closes after {result['lease_closed_after_s']}")
    out = os.environ.get("DJINN_LOAD_JSON")
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
    bad = failures(result)
    assert alive
    assert not bad, f"{len(bad)} failures:\n" + "\n".join(bad[:60])
    s = result["sessions"]
    assert s["created"] >= 200 and s.get("tokens_checked", 0) >= 120 and s.get("norms_checked", 0) >= 50
    assert result["telemetry_peaks"].get("swapped_kv_bytes", 0) > 0, "the budget never made the server swap"
