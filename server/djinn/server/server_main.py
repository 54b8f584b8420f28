"""Entry point: python -m djinn.server.server_main --model llama-2-13b --vram-budget-gb 80 ..."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from concurrent import futures


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="djinn-server", description="Djinn: pause LLM forward passes mid-way, many "
                                "sessions on one GPU under a VRAM budget, KV of paused sessions swapped to pinned host memory.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for remote clients)")
    p.add_argument("--port", type=int, default=5556, help="port (0 = pick a free one; the ready line says which)")
    p.add_argument("--model", default="tiny-40l", help="named config (llama-2-13b, llama-2-7b, tiny-40l, tiny-4l) with "
                   "random weights, or a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="auto: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--vram-budget-gb", default=None, help="device memory budget in GB (default 80 on CUDA, 8 on the CPU), "
                   "or auto:F = weights + workspace + F x (--plan-sessions x KV of --plan-context tokens)")
    p.add_argument("--plan-sessions", type=int, default=50, help="for --vram-budget-gb auto:F")
    p.add_argument("--plan-context", type=int, default=2048, help="for --vram-budget-gb auto:F")
    p.add_argument("--host-pool-gb", type=float, default=None, help="pinned host pool for swapped KV (default 96 on CUDA, 2 on the CPU)")
    p.add_argument("--max-context", type=int, default=None, help="largest context a session may ask for (default 2048 on CUDA, 1024 on the CPU; the workspace is measured at this length)")
    p.add_argument("--swap-policy", default="pressure", choices=["pressure", "eager"],
                   help="pressure: swap paused sessions out only when room is needed; eager: at every stop")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights of a named config")
    p.add_argument("--token", default=os.environ.get("DJINN_TOKEN", ""), help="require this x-djinn-token on every call")
    p.add_argument("--no-allocator-cap", action="store_true", help="do not cap the CUDA allocator to the budget")
    p.add_argument("--workers", type=int, default=64, help="gRPC handler threads (each open stream holds one)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.device != "cpu":
        # Fewer fragmentation surprises under a hard allocator cap.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    import grpc

    from ..v1 import djinn_pb2_grpc as pb_grpc
    from .service import DjinnService
    from .state import Options, ServerState

    import torch
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    opts = Options(model=a.model, device=a.device, gpu=a.gpu, dtype=a.dtype,
                   budget=a.vram_budget_gb or ("80" if cuda else "8"), plan_sessions=a.plan_sessions,
                   plan_context=a.plan_context, host_pool_gb=a.host_pool_gb, max_context=a.max_context,
                   swap_policy=a.swap_policy, seed=a.seed, token=a.token, cap_allocator=not a.no_allocator_cap)
    try:
        state = ServerState(opts)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"djinn: cannot start: {e}", file=sys.stderr)
        return 2
    mb = 256 << 20
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=a.workers, thread_name_prefix="djinn-rpc"),
                         options=[("grpc.max_receive_message_length", mb), ("grpc.max_send_message_length", mb)])
    pb_grpc.add_DjinnServicer_to_server(DjinnService(state), server)
    port = server.add_insecure_port(f"{a.host}:{a.port}")
    if port == 0:
        print(f"djinn: cannot listen on {a.host}:{a.port}", file=sys.stderr)
        return 2
    server.start()
    address = f"{a.host}:{port}"
    ready = dict(address=address, model=a.model, device=str(state.device), device_name=state.device_name(),
                 dtype=str(state.dtype).replace("torch.", ""), budget_bytes=state.ledger.budget,
                 weights_bytes=state.ledger.weights, workspace_bytes=state.ledger.workspace,
                 host_pool_bytes=state.pool.nbytes, startup_seconds=state.startup_seconds, pid=os.getpid())
    print("DJINN_READY " + json.dumps(ready), flush=True)
    print(state.summary_line(address), flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    state.stopping = True
    server.stop(grace=1).wait(3)
    state.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
