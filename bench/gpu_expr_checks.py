"""Hostile expressions against a real model session on the GPU: each must be refused with a clean
status and the CUDA context must stay healthy (an unchecked out-of-range gather is a device-side
assert that poisons the context of every session of the server).

    python3 bench/gpu_expr_checks.py --out DIR [--model tiny-40l|llama-2-13b] [--device auto]

Runs without the gRPC server: it builds the engine as server/djinn/server/state.py does, pauses
one session mid-pass, and calls tensor_ops.evaluate_expression directly. Writes
DIR/gpu-expr-checks.json; exits 1 if a case got the wrong status or the device is unhealthy.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
import weakref

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))

import torch  # noqa: E402

from djinn.inspect.expr import Limits  # noqa: E402
from djinn.model.build import build_model  # noqa: E402
from djinn.runtime import tensor_ops  # noqa: E402
from djinn.runtime.engine import Engine  # noqa: E402
from djinn.runtime.errors import DjinnError  # noqa: E402
from djinn.runtime.session import ATTN, PAUSED, Session  # noqa: E402
from djinn.runtime.swap import SessionMemory  # noqa: E402

BAD, FULL, OK = "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OK"
# (name, expression, expected status, limits for this case (None: the defaults) or a call to make instead)
CASES = [
    ("gather: token ids as row indices", "hidden[tokens]", BAD, None),
    ("gather: far past the end", "hidden[tokens * 100000]", BAD, None),
    ("gather: negative past the start", "hidden[tokens - 10000000]", BAD, None),
    ("gather: second dim", "hidden[0, tokens * 1000]", BAD, None),
    ("gather: in a mixed tuple", "k_cache[0, tokens * 1000, 1:]", BAD, None),
    ("gather: after a bool mask", "hidden[hidden[:, 0] > 0, tokens * 1000]", BAD, None),
    ("gather: computed on the device", "hidden[argmax(hidden, dim=1) + 1000000]", BAD, None),
    ("gather: after ...", "k_cache[..., tokens * 1000]", BAD, None),
    ("gather: index tensors that do not broadcast", "hidden[tokens - tokens, shape(hidden) - shape(hidden)]",
     BAD, None),
    ("integer index past the end", "hidden[100000000]", BAD, None),
    ("integer index past the start", "hidden[-100000000]", BAD, None),
    ("0-d tensor index", "hidden[argmax(tokens) + 100000000]", BAD, None),
    ("bool mask of the wrong shape", "hidden[k_cache[0] > 0]", BAD, None),
    ("2 ** 2048", "2 ** 2048", BAD, None),
    ("integer literal past int64", "99999999999999999999", BAD, None),
    ("int64 overflow", "9223372036854775807 + 1", BAD, None),
    ("float overflow", "2.0 ** 2048", BAD, None),
    ("complex result", "(-8) ** 0.5", BAD, None),
    ("reduction dim out of range", "mean(hidden, dim=7)", BAD, None),
    ("softmax dim out of range", "softmax(hidden, -5)", BAD, None),
    ("topk k too large", "topk(hidden, 100000000)", BAD, None),
    ("cos_sim dim out of range", "cos_sim(hidden, hidden, 3)", BAD, None),
    ("matmul shapes", "hidden[0:3] @ hidden[0:5]", BAD, None),
    ("clamp of mismatched shapes", "clamp(hidden, k_cache, 1)", BAD, None),
    ("elements limit", "hidden * 2", FULL, Limits(max_elements=1000)),
    ("elements limit: logits", "max(logits)", FULL, Limits(max_elements=1000)),
    ("time limit", " + ".join(["norm(hidden)"] * 100), FULL, Limits(max_ms=0.001)),
    ("stored results limit", "hidden", FULL, Limits(max_result_bytes=1024)),
    ("in-range gather", "hidden[tokens - tokens]", OK, None),
    ("in-range negative gather", "hidden[tokens - tokens - 1]", OK, None),
    ("logits", "max(logits[-1])", OK, None),
    ("a normal evaluation", "norm(hidden[-1])", OK, None),
    # the other paths where user numbers reach a kernel
    ("GetTensor slice past the end", "GetTensor hidden [0:1000000000]", "OUT_OF_RANGE",
     lambda e, s: tensor_ops.get_tensor(e, s, "hidden", [(0, 10 ** 9, 1)], True)),
    ("LogitLens position past the end", "LogitLens position 1000000000", "OUT_OF_RANGE",
     lambda e, s: tensor_ops.logit_lens(e, s, 5, "hidden", 10 ** 9)),
]


def pick_device(name: str) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", 0)


def paused_session(engine: Engine, prompt_len: int, layer: int) -> Session:
    """A session stopped at layers.{layer}.attn, as the scheduler leaves one for tensor_ops."""
    a = engine.args
    context = prompt_len + 4
    mem = SessionMemory((a.n_layers, 2, a.n_kv_heads, context, a.head_dim), engine.dtype, 0)
    mem.kv = torch.zeros(mem.kv_shape, dtype=engine.dtype, device=engine.device)
    # token ids from the top of the vocabulary: far past the number of rows of hidden
    tokens = [a.vocab_size - 1 - (i % 97) for i in range(prompt_len)]
    s = Session(tokens, 4, context, mem)
    engine.begin(s)
    while (s.layer, s.point) != (layer, ATTN):
        engine.advance(s)
    s.state = PAUSED
    return s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def healthy(engine: Engine, s: Session) -> tuple[bool, str]:
    try:
        out = tensor_ops.evaluate_expression(engine, s, "sum(hidden * 0) + 1")
        sync(engine.device)
        x = torch.ones(1024, device=engine.device)
        ok = out.get("scalar") == 1.0 and float((x @ x).item()) == 1024.0
        return ok, "" if ok else f"wrong answer {out}"
    except Exception as e:  # noqa: BLE001 - anything here means the device is not usable
        return False, f"{type(e).__name__}: {e}"


def control_fault(device: torch.device) -> dict:
    """The same gather without the checks, in a child process (it poisons its own context):
    shows that the hostile cases would really fault this device."""
    if device.type != "cuda":
        return {"ran": False, "why": "no CUDA device"}
    code = ("import torch; x = torch.zeros(4, 8, device='cuda'); "
            "i = torch.tensor([1 << 20], device='cuda'); y = x[i]; torch.cuda.synchronize(); print('no fault')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    tail = (p.stderr.strip().splitlines() or [p.stdout.strip()])[-1][:300]
    return {"ran": True, "faulted": p.returncode != 0, "returncode": p.returncode, "message": tail}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="tiny-40l")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--prompt-len", type=int, default=0, help="default: 512, or a quarter of a small vocabulary")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-control", action="store_true", help="skip the unchecked gather in a child process")
    args = ap.parse_args()

    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else \
        torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        print("gpu_expr_checks: no CUDA device; running on the CPU (the device-fault cases prove nothing here)")
    t0 = time.perf_counter()
    model, tok, margs = build_model(args.model, device, dtype, args.seed)
    # token ids come from the top of the vocabulary: they must exceed the rows of hidden
    args.prompt_len = args.prompt_len or min(512, margs.vocab_size // 4)
    assert margs.vocab_size - 97 > args.prompt_len, "--prompt-len must stay below vocab_size - 97"
    engine = Engine(model, tok, device, dtype, args.prompt_len + 4)
    layer = min(args.layer, margs.n_layers - 1)
    s = paused_session(engine, args.prompt_len, layer)
    sync(device)
    print(f"{args.model} {dtype} on {device} ({name}): session paused at layers.{layer}.attn with "
          f"{args.prompt_len} tokens in {time.perf_counter() - t0:.1f} s")

    # The first use of each kernel in a process (lazy module loading, cuBLAS set-up) took over 2 s
    # on the H200: warm them up, so the cases measure the checks and not the cold start.
    engine.expr_limits = Limits(max_ms=120_000)
    t = time.perf_counter()
    for src in ("hidden[tokens - tokens] * 2", "norm(hidden[-1]) + max(logits[-1])", "hidden[hidden[:, 0] > 0]"):
        tensor_ops.evaluate_expression(engine, s, src)
    sync(device)
    warmup_ms = (time.perf_counter() - t) * 1e3
    print(f"warm-up: {warmup_ms:.0f} ms")
    results, fault = [], ""
    for label, src, want, limits in CASES:
        engine.expr_limits = None if callable(limits) else limits
        s.results.clear()
        t = time.perf_counter()
        try:
            out = limits(engine, s) if callable(limits) else tensor_ops.evaluate_expression(engine, s, src)
            sync(device)
            code, msg = OK, out.get("value", "") if isinstance(out, dict) else str(out)[:200]
        except DjinnError as e:
            code, msg = e.code, str(e)
        except Exception as e:  # noqa: BLE001 - a device fault (or a bug): recorded, then stop
            code, msg = "UNCAUGHT", f"{type(e).__name__}: {e}"
        ms = (time.perf_counter() - t) * 1e3
        ok = code == want
        results.append(dict(name=label, expression=src, expected=want, status=code, message=msg[:500],
                            ms=round(ms, 3), passed=ok))
        print(f"{'ok  ' if ok else 'FAIL'} {label:44s} {code:18s} {msg[:110]}")
        if code == "UNCAUGHT":
            fault = msg
            break
    engine.expr_limits = None

    # A result taken from the KV cache must not keep the KV buffer alive past a swap-out.
    ref = weakref.ref(s.memory.kv)
    for src in ("k_cache[0]", "k_cache"):
        tensor_ops.evaluate_expression(engine, s, src)
    kv_keep = dict(results_on_host=all(t.device.type == "cpu" for t in s.results.values()))
    ok_health, why = healthy(engine, s)
    s.memory.kv = None
    gc.collect()
    kv_keep["kv_freed_after_swap_out"] = ref() is None

    control = {"ran": False, "why": "--no-control"} if args.no_control else control_fault(device)
    passed = all(r["passed"] for r in results) and len(results) == len(CASES)
    report = dict(
        script="bench/gpu_expr_checks.py", time=time.time(), model=args.model, dtype=str(dtype).removeprefix("torch."),
        device=str(device), device_name=name, cuda=device.type == "cuda", torch_version=torch.__version__,
        cuda_version=torch.version.cuda, python=platform.python_version(), layer=layer, prompt_len=args.prompt_len,
        warmup_ms=round(warmup_ms, 1), cases=results, all_cases_passed=passed, device_healthy=ok_health and not fault,
        health_error=fault or why, kv=kv_keep, unchecked_gather_control=control)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gpu-expr-checks.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{sum(r['passed'] for r in results)}/{len(CASES)} cases as expected; device_healthy="
          f"{report['device_healthy']}; kv freed={kv_keep['kv_freed_after_swap_out']}; control={control}; wrote {path}")
    return 0 if passed and report["device_healthy"] and kv_keep["kv_freed_after_swap_out"] else 1


if __name__ == "__main__":
    sys.exit(main())
