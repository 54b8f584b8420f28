"""Exp 3 memory-pressure test WITHOUT Djinn: plain transformers, PyTorch eager.

N "debugging users" share one LlamaForCausalLM (random weights, the shape of a named config).
Each is a thread running its own forward passes with its own DynamicCache. A forward
pre-hook on model.model.layers[b], for every breakpoint b, blocks the thread (a
threading.Event) while its user is paused there: the paused user keeps its KV cache and its
activations on the device, which is what a debugger built on hooks does.

The driver admits users one at a time. User i prefills (context - new_tokens) tokens, then
starts decoding, and stops at the first breakpoint of its first decode step (with
--pause-in prefill it stops at the first breakpoint of the prefill pass instead, holding only
the layers before it). The driver keeps it paused and admits the next one, until all N are
paused or memory runs out:

- on CUDA the caching allocator is capped at the budget
  (torch.cuda.set_per_process_memory_fraction) and the refusal is a real
  torch.OutOfMemoryError, caught in the user's thread ("budget_enforced_by": "allocator");
- on the CPU nothing caps the allocator, so the bytes actually held are accounted (weights +
  each paused user's cache tensors and held hidden state, summed from the real tensors) and
  the first user that takes the total over the budget is the refusal point
  ("budget_enforced_by": "accounting").

Every number is measured at the time: torch.cuda.memory_allocated / max_memory_allocated /
memory_reserved after each admitted user, NVML's device-used figure when pynvml imports.
Then everyone is released (their passes are aborted at the next hook), hooks are removed,
memory is freed. Nothing waits without a timeout; user threads are daemons.

    python -m djinn.baselines.eager_pressure --model llama-2-13b --sessions 50 --context 2048 \
        --new-tokens 16 --budget-gb 80 --breakpoints 10,20,30 --json-out eager.json
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..model.config import ModelArgs, named_config
from ..runtime.allocator import use_djinn_allocator_settings

GB = 1e9
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class _Released(Exception):
    """Raised inside a user's forward pass (from the hook) to abort it when the test ends."""


# ---------------------------------------------------------------- measurement helpers

def cache_tensors(cache) -> list[torch.Tensor]:
    """The K/V tensors a transformers cache holds now (5.x: cache.layers[i].keys/values; 4.x lists)."""
    out: list[torch.Tensor] = []
    for layer in getattr(cache, "layers", None) or []:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                out.append(t)
    if not out:
        for name in ("key_cache", "value_cache"):
            for t in getattr(cache, name, None) or []:
                if isinstance(t, torch.Tensor):
                    out.append(t)
    return out


def tensor_bytes(tensors) -> int:
    """Bytes of the storages behind the tensors, each storage once: a cache that keeps a view
    of a larger pre-allocated buffer is charged the whole buffer, as the allocator is."""
    seen, total = set(), 0
    for t in tensors:
        st = t.untyped_storage()
        key = (t.device, st.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def module_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


class _Nvml:
    """NVML device-used bytes, when nvidia-ml-py is installed; None otherwise."""

    def __init__(self, device: torch.device):
        self.handle = None
        self.pynvml = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = None
            uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
            if uuid is not None:
                try:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
                except Exception:
                    handle = None
            if handle is None:
                index = device.index if device.index is not None else torch.cuda.current_device()
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
                ids = [v.strip() for v in visible.split(",") if v.strip()]
                if ids and all(v.isdigit() for v in ids) and index < len(ids):
                    index = int(ids[index])
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.pynvml, self.handle = pynvml, handle
        except Exception:
            self.handle = None

    def used(self) -> int | None:
        if self.handle is None:
            return None
        try:
            return int(self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        except Exception:
            return None


# ---------------------------------------------------------------- model

def hf_config_for(args: ModelArgs):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=args.dim, num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads, intermediate_size=args.intermediate_size,
        vocab_size=args.vocab_size, rms_norm_eps=args.norm_eps, rope_theta=args.rope_theta,
        max_position_embeddings=args.max_context, tie_word_embeddings=args.tie_embeddings,
        use_cache=True,
    )


def build_hf_model(args: ModelArgs, device: torch.device, dtype: torch.dtype, attn: str, seed: int):
    """transformers LlamaForCausalLM made directly on the device in dtype (no CPU copy, no fp32 pass)."""
    from transformers import LlamaForCausalLM

    cfg = hf_config_for(args)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        # _from_config sets the default dtype while the modules are made, so the weights are
        # allocated once, in dtype; HF's own init (normal_, std 0.02) then runs on the device.
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype, attn_implementation=attn)
    return model.eval()


def _cache_kwarg(model) -> str:
    """transformers 5.24 renamed forward's `past_key_values` to `cache`; 5.17 and 4.x use the old name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _new_cache(config):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:
        return DynamicCache()


# ---------------------------------------------------------------- users

@dataclass
class User:
    index: int  # 1-based
    prompt_len: int
    new_tokens: int
    pause_in: str
    changed: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    release: bool = False
    armed: bool = False
    state: str = "created"  # created running paused finished released oom error
    error: str | None = None
    paused_at_layer: int | None = None
    kv_bytes: int = 0  # measured from the cache tensors at the pause
    held_bytes: int = 0  # kv_bytes + the hidden state the paused pass holds
    prefill_seconds: float | None = None
    thread: threading.Thread | None = None
    cache: Any = None

    def set_state(self, state: str) -> None:
        self.state = state
        self.changed.set()


class _Registry:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_thread: dict[int, User] = {}

    def add(self, user: User) -> None:
        with self._lock:
            self._by_thread[threading.get_ident()] = user

    def remove(self) -> None:
        with self._lock:
            self._by_thread.pop(threading.get_ident(), None)

    def current(self) -> User | None:
        with self._lock:
            return self._by_thread.get(threading.get_ident())


def _make_hook(layer: int, registry: _Registry, hold_timeout_s: float):
    def hook(module, args, kwargs):
        user = registry.current()
        if user is None or not user.armed:
            return None
        if user.release:
            raise _Released()
        hidden = args[0] if args else kwargs.get("hidden_states")
        user.paused_at_layer = layer
        user.kv_bytes = tensor_bytes(cache_tensors(user.cache)) if user.cache is not None else 0
        user.held_bytes = user.kv_bytes + (tensor_bytes([hidden]) if isinstance(hidden, torch.Tensor) else 0)
        if hidden is not None and hidden.is_cuda:
            torch.cuda.current_stream(hidden.device).synchronize()  # the pass really reached here
        user.set_state("paused")
        deadline = time.monotonic() + hold_timeout_s
        while not user.release and not user.resume.wait(timeout=0.5):
            if time.monotonic() > deadline:
                user.release = True  # nobody came back for us: give the memory back
                break
        if user.release:
            raise _Released()
        user.set_state("running")
        return None

    return hook


def _user_main(user: User, model, registry: _Registry, device: torch.device, vocab: int, seed: int,
               cache_kw: str) -> None:
    registry.add(user)
    try:
        with torch.inference_mode():
            gen = torch.Generator(device="cpu").manual_seed(seed * 100003 + user.index)
            ids = torch.randint(3, vocab, (1, user.prompt_len), generator=gen).to(device)
            user.cache = _new_cache(model.config)
            user.set_state("running")
            user.armed = user.pause_in == "prefill"
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_kw: user.cache})
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            del out
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            user.prefill_seconds = time.perf_counter() - t0
            user.armed = True
            for _ in range(user.new_tokens):
                out = model(input_ids=tok, use_cache=True, logits_to_keep=1, **{cache_kw: user.cache})
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                del out
        user.cache = None
        user.set_state("finished")
    except _Released:
        user.cache = None
        user.set_state("released")
    except _OOM as e:  # the allocator refused: this is the measurement, not a crash
        user.cache = None
        user.error = str(e).strip().splitlines()[0][:300]
        user.set_state("oom")
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        user.cache = None
        user.error = f"{type(e).__name__}: {e}"[:300]
        user.set_state("error")
    finally:
        user.cache = None
        registry.remove()


def _wait_settled(user: User, timeout_s: float) -> bool:
    """Until the user is paused or its thread is done; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if user.state in ("paused", "finished", "released", "oom", "error"):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        user.changed.wait(timeout=min(left, 0.5))
        user.changed.clear()


# ---------------------------------------------------------------- the test

def resolve_device(name: str) -> torch.device:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise SystemExit(f"--dtype {name}: one of auto, {', '.join(_DTYPES)}") from None


def run_pressure(model_name: str, sessions: int, context: int, new_tokens: int, budget_gb: float,
                 breakpoints: list[int], device: str = "auto", dtype: str = "auto", seed: int = 0,
                 pause_in: str = "decode", attn: str = "sdpa", admit_timeout_s: float = 600.0,
                 hold_timeout_s: float = 3600.0, join_timeout_s: float = 60.0) -> dict:
    import transformers

    t_start = time.perf_counter()
    margs = named_config(model_name)
    if not breakpoints:
        raise ValueError("at least one breakpoint is needed")
    bad = [b for b in breakpoints if not 0 <= b < margs.n_layers]
    if bad:
        raise ValueError(f"breakpoints {bad} outside layers 0..{margs.n_layers - 1} of {model_name}")
    prompt_len = context - new_tokens
    if prompt_len < 1 or new_tokens < 1:
        raise ValueError(f"need 1 <= new_tokens < context (got context {context}, new_tokens {new_tokens})")
    if context > margs.max_context:
        raise ValueError(f"context {context} exceeds {model_name}'s max_context {margs.max_context}")
    if pause_in not in ("decode", "prefill"):
        raise ValueError("pause_in: decode or prefill")

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    budget_bytes = int(budget_gb * GB)
    is_cuda = dev.type == "cuda"
    nvml = _Nvml(dev)
    result: dict[str, Any] = dict(
        sessions_requested=sessions, sessions_fit=0, oom_at_session=None, vram_held_while_paused_gb=None,
        per_session=[], peak_allocator_gb=None, budget_gb=budget_gb, weights_gb=None,
        device=str(dev), device_name=torch.cuda.get_device_name(dev) if is_cuda else "cpu",
        model=model_name, context=context, new_tokens=new_tokens, prompt_tokens=prompt_len,
        breakpoints=breakpoints, pause_in=pause_in, attn_implementation=attn,
        dtype=str(dt).replace("torch.", ""),
        budget_enforced_by="allocator" if is_cuda else "accounting",
        elapsed_seconds=None, torch_version=torch.__version__, transformers_version=transformers.__version__,
        nvml_available=nvml.handle is not None, error=None,
        pytorch_cuda_alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    )

    fraction_set = False
    if is_cuda:
        total = torch.cuda.get_device_properties(dev).total_memory
        fraction = min(1.0, budget_bytes / total)
        torch.cuda.set_per_process_memory_fraction(fraction, dev)
        fraction_set = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        result.update(device_total_gb=total / GB, allocator_fraction=fraction,
                      budget_exceeds_device=budget_bytes > total)

    def allocated() -> int:
        return torch.cuda.memory_allocated(dev) if is_cuda else 0

    users: list[User] = []
    handles = []
    model = None
    registry = _Registry()
    try:
        base_alloc = allocated()
        t_build = time.perf_counter()
        try:
            model = build_hf_model(margs, dev, dt, attn, seed)
        except _OOM as e:
            result["error"] = f"the weights alone do not fit in the budget: {str(e).splitlines()[0][:200]}"
            return result
        if is_cuda:
            torch.cuda.synchronize(dev)
        result["build_seconds"] = time.perf_counter() - t_build
        weights_tensor_bytes = module_bytes(model)
        weights_bytes = (allocated() - base_alloc) if is_cuda else weights_tensor_bytes
        result["weights_gb"] = weights_bytes / GB
        result["weights_tensor_gb"] = weights_tensor_bytes / GB
        result["weights_measured_by"] = "allocator" if is_cuda else "tensor bytes"
        if not is_cuda and weights_bytes > budget_bytes:
            result["error"] = (f"the weights alone ({weights_bytes / GB:.3f} GB) exceed the budget "
                               f"({budget_gb} GB)")
            return result

        layers = model.model.layers
        for b in sorted(set(breakpoints)):
            handles.append(layers[b].register_forward_pre_hook(
                _make_hook(b, registry, hold_timeout_s), with_kwargs=True))
        cache_kw = _cache_kwarg(model)
        t_admit = time.perf_counter()

        for i in range(1, sessions + 1):
            user = User(index=i, prompt_len=prompt_len, new_tokens=new_tokens, pause_in=pause_in)
            users.append(user)
            user.thread = threading.Thread(
                target=_user_main, name=f"eager-user-{i}", daemon=True,
                args=(user, model, registry, dev, margs.vocab_size, seed, cache_kw))
            user.thread.start()
            if not _wait_settled(user, admit_timeout_s):
                user.release = True
                user.resume.set()
                result["error"] = f"session {i} neither paused nor failed within {admit_timeout_s} s"
                break
            if user.state != "paused":
                user.thread.join(timeout=join_timeout_s)
                if user.state == "oom":
                    result["oom_at_session"] = i
                    result["oom_error"] = user.error
                else:
                    result["error"] = f"session {i} ended in state {user.state}: {user.error}"
                break
            held_accounted = weights_bytes + sum(u.held_bytes for u in users if u.state == "paused")
            entry: dict[str, Any] = dict(session=i, paused_at_layer=user.paused_at_layer,
                                         kv_bytes=user.kv_bytes, held_bytes=user.held_bytes,
                                         prefill_seconds=user.prefill_seconds,
                                         accounted_gb=held_accounted / GB)
            if is_cuda:
                torch.cuda.synchronize(dev)
                entry.update(allocated_gb=torch.cuda.memory_allocated(dev) / GB,
                             max_allocated_gb=torch.cuda.max_memory_allocated(dev) / GB,
                             reserved_gb=torch.cuda.memory_reserved(dev) / GB)
            else:
                entry["allocated_gb"] = held_accounted / GB
            used = nvml.used()
            entry["nvml_used_gb"] = used / GB if used is not None else None
            if not is_cuda and held_accounted > budget_bytes:
                # No allocator to refuse on the CPU: the accounted bytes crossing the budget are
                # the refusal. This user is turned away (its pass aborted), like an OOM would.
                entry["refused"] = True
                result["per_session"].append(entry)
                result["oom_at_session"] = i
                result["oom_error"] = (f"accounted {held_accounted / GB:.6f} GB > budget {budget_gb} GB")
                user.release = True
                user.resume.set()
                user.thread.join(timeout=join_timeout_s)
                break
            result["per_session"].append(entry)
            result["sessions_fit"] = i

        result["admit_seconds"] = time.perf_counter() - t_admit
        # Everyone who fits is paused now, the refused one gone: what a hook-based debugger holds.
        gc.collect()
        paused = [u for u in users if u.state == "paused"]
        result["sessions_paused_at_end"] = len(paused)
        if is_cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            result["vram_held_while_paused_gb"] = torch.cuda.memory_allocated(dev) / GB
            result["reserved_while_paused_gb"] = torch.cuda.memory_reserved(dev) / GB
            result["peak_allocator_gb"] = torch.cuda.max_memory_allocated(dev) / GB
            result["peak_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / GB
        else:
            held = weights_bytes + sum(u.held_bytes for u in paused)
            result["vram_held_while_paused_gb"] = held / GB
            peak = max([e["accounted_gb"] for e in result["per_session"]] + [weights_bytes / GB])
            result["peak_allocator_gb"] = peak
        used = nvml.used()
        result["nvml_used_while_paused_gb"] = used / GB if used is not None else None
        if paused:
            result["kv_bytes_per_session_measured"] = paused[-1].kv_bytes
    finally:
        # Release: every paused pass is aborted at its hook, threads end, memory goes back.
        t_release = time.perf_counter()
        for u in users:
            u.release = True
            u.resume.set()
        stuck = 0
        for u in users:
            if u.thread is not None:
                u.thread.join(timeout=join_timeout_s)
                stuck += u.thread.is_alive()
        for h in handles:
            h.remove()
        result["release_seconds"] = time.perf_counter() - t_release
        result["released_cleanly"] = stuck == 0
        result["threads_still_running"] = stuck
        result["user_states"] = {s: sum(u.state == s for u in users) for s in sorted({u.state for u in users})}
        del model
        gc.collect()
        if is_cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            result["allocated_after_release_gb"] = torch.cuda.memory_allocated(dev) / GB
            if fraction_set:
                torch.cuda.set_per_process_memory_fraction(1.0, dev)
        result["elapsed_seconds"] = time.perf_counter() - t_start
    return result


def summary_line(r: dict) -> str:
    where = "all fit" if r["oom_at_session"] is None else f"out of memory at session {r['oom_at_session']}"
    held = r["vram_held_while_paused_gb"]
    held_s = f"{held:.2f} GB held while paused" if held is not None else "nothing held"
    err = f"; error: {r['error']}" if r.get("error") else ""
    return (f"eager baseline: {r['model']} ctx {r['context']} on {r['device_name']} ({r['dtype']}), "
            f"budget {r['budget_gb']} GB ({r['budget_enforced_by']}): {r['sessions_fit']}/{r['sessions_requested']} "
            f"sessions paused, {where}; {held_s}; weights {r['weights_gb'] or 0:.2f} GB; "
            f"{r['elapsed_seconds']:.1f} s{err}")


def _parse_breakpoints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"breakpoints: comma-separated layer numbers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m djinn.baselines.eager_pressure", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="llama-2-13b", help="a named config (djinn.model.config.CONFIGS)")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--context", type=int, default=2048, help="tokens per session (prompt + new tokens)")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--budget-gb", type=float, default=80.0, help="GB = 1e9 bytes")
    p.add_argument("--breakpoints", type=_parse_breakpoints, default=[10, 20, 30])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pause-in", choices=("decode", "prefill"), default="decode",
                   help="decode: prefill runs through, the first decode step stops at the first breakpoint "
                        "(the whole prompt's KV is held); prefill: stop inside the prefill pass")
    p.add_argument("--attn", default="sdpa", help="transformers attn_implementation: sdpa or eager")
    p.add_argument("--admit-timeout", type=float, default=600.0, help="seconds one session may take to pause")
    p.add_argument("--json-out", default=None)
    a = p.parse_args(argv)
    use_djinn_allocator_settings(a.device)
    try:
        r = run_pressure(a.model, a.sessions, a.context, a.new_tokens, a.budget_gb, a.breakpoints,
                         device=a.device, dtype=a.dtype, seed=a.seed, pause_in=a.pause_in, attn=a.attn,
                         admit_timeout_s=a.admit_timeout)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
        with open(a.json_out, "w") as f:
            json.dump(r, f, indent=2)
    print(summary_line(r), flush=True)
    return 1 if r.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
