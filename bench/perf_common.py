"""Shared helpers of the issue-10 benchmark family (bench/h200_perf.py and its parts):
progress lines, statistics, prompts, the allocator setting, device sync."""
from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SERVER_DIR = os.path.join(REPO, "server")
_T0 = time.perf_counter()


def code_commit() -> str:
    """The commit of the code that runs: $DJINN_COMMIT when set (a copy on the device, whose
    enclosing checkout can answer git with a stale HEAD), else git's HEAD, else "unknown"."""
    env = os.environ.get("DJINN_COMMIT", "").strip()
    if env:
        return env
    import subprocess
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def sync(dev) -> None:
    """Waits for the device's queued work (timed regions are bracketed by it); nothing on the CPU."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def use_server_package() -> None:
    """Makes `import djinn` (and server/tests' loadgen) importable."""
    for p in (SERVER_DIR, os.path.join(SERVER_DIR, "tests")):
        if p not in sys.path:
            sys.path.insert(0, p)


def set_alloc_conf(device: str) -> str | None:
    """PYTORCH_CUDA_ALLOC_CONF as the server sets it (djinn.runtime.allocator) for every process
    of this benchmark that may touch CUDA. Must run before torch initialises CUDA."""
    use_server_package()
    from djinn.runtime.allocator import use_djinn_allocator_settings

    return use_djinn_allocator_settings(device)


def log(tag: str, msg: str) -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def summary(xs: list[float], nd: int = 3) -> dict:
    """median, p10, p90 (inclusive deciles), min, max, n and every sample, rounded."""
    xs = list(xs)
    if not xs:
        return dict(n=0)
    r = lambda v: round(float(v), nd)
    if len(xs) >= 2:
        q = statistics.quantiles(xs, n=10, method="inclusive")
        p10, p90 = q[0], q[-1]
    else:
        p10 = p90 = xs[0]
    return dict(n=len(xs), median=r(statistics.median(xs)), p10=r(p10), p90=r(p90), min=r(min(xs)), max=r(max(xs)),
                all=[r(x) for x in xs])


def prompt_tokens(n: int, vocab: int, salt: int = 0) -> list[int]:
    """A deterministic prompt of n token ids in 3..vocab-1 (0..2 are often special)."""
    span = vocab - 3
    return [3 + (salt * 7919 + j * 31 + (j * j) % 97) % span for j in range(n)]


def device_name_fallback(device: str) -> str:
    if device == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "cpu"
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
