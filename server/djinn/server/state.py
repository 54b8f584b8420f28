"""Everything the server holds, built once at start-up, with every memory figure measured."""
from __future__ import annotations

import platform
import uuid
import threading
import time
from dataclasses import dataclass

import torch

from .. import __version__
from ..model.build import build_model
from ..model.llama import module_tree, weight_bytes
from ..runtime.engine import Engine
from ..runtime.events import EventHub
from ..runtime.host_pool import HostPool
from ..runtime.memory import Ledger, Nvml, allocator_stats
from ..runtime.scheduler import Scheduler
from .auth import Identity, Users
from .clients import Clients
from .leases import Leases
from ..runtime.session import FINISHED, Session
from ..runtime.swap import HOST, SessionMemory, Swapper
from ..v1 import djinn_pb2 as pb
from . import convert

GB = 1e9


@dataclass
class Options:
    model: str
    device: str = "auto"        # auto | cpu | cuda
    gpu: int = 0
    dtype: str = "auto"
    budget: str = "80"          # GB, or "auto:F" (weights + workspace + F x planned sessions' KV)
    plan_sessions: int = 50
    plan_context: int = 2048
    host_pool_gb: float | None = None
    host_pool_chunk_gb: float = 2.0  # pinned (and handed out) in chunks of about this size, in order
    host_pool_wait_s: float = 60.0   # a copy into a chunk still being pinned waits this long for it
    spill_dir: str = ""              # the disk tier's folder ("" = no disk tier)
    spill_gb: float = 0.0            # the spill file's size
    max_context: int | None = None
    swap_policy: str = "pressure"
    seed: int = 0
    token: str = ""
    tokens_file: str = ""
    cap_allocator: bool = True
    lease_s: float = 900.0           # a disconnected client's sessions are kept this long
    retire_s: float = 300.0          # an ended session is forgotten this long after it ended (or was touched)
    quantum_ms: float = 0.0          # fair turns: 0 = a turn is one forward pass; else also at most this long
    patience_ms: float = 200.0       # a swapped-out runnable session lets resident ones go first this long at most
    expr_max_elements: int = 1 << 30
    expr_max_ms: float = 2000.0
    subscriber_queue: int = 10_000   # events a stream subscriber may fall behind before it is told it lagged
    replay_mb: float = 64.0          # the events replay buffer, in MB
    max_sessions_per_user: int = 0   # 0 = no limit
    fault_injection: bool = False    # tests only: Evaluate("__device_fault__") injects a device fault
    tls: bool = False
    batch_rows: int = 16             # decode block size (runtime/pieces.py); 1 = no batching
    cuda_graphs: bool = True         # decode pieces as CUDA graphs (CUDA only)
    history_mb: float = 1024.0       # time travel: a session's snapshots, at most (and by default) this many MiB


def pick_device(opts: Options) -> torch.device:
    if opts.device == "cpu" or (opts.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device("cuda", opts.gpu)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
            "float32": torch.float32, "fp32": torch.float32}[name]


class ServerState:
    def __init__(self, opts: Options, log=lambda line: print(line, flush=True)):
        t0 = time.perf_counter()
        self.startup_phases: dict[str, float] = {}   # seconds per step, measured (the ready line shows them)
        mark = [t0]

        def phase(name: str) -> None:
            now = time.perf_counter()
            self.startup_phases[name] = round(now - mark[0], 3)
            mark[0] = now
        self.opts, self.stopping = opts, False
        self.server_id = uuid.uuid4().hex
        self.device = pick_device(opts)
        self.dtype = pick_dtype(opts.dtype, self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.set_device(self.device)
        self.nvml = Nvml(self.device)
        phase("device")
        self.users = Users.from_options(opts.token, opts.tokens_file)
        self.clients = Clients()
        model, tokenizer, args = build_model(opts.model, self.device, self.dtype, opts.seed)
        phase("weights")
        self.args = args
        max_ctx = opts.max_context or min(args.max_context, 2048 if cuda else 1024)
        if opts.batch_rows < 1:
            raise ValueError(f"--batch-rows must be at least 1, not {opts.batch_rows}")
        self.engine = Engine(model, tokenizer, self.device, self.dtype, max_ctx, batch_rows=opts.batch_rows,
                             graphs=opts.cuda_graphs)
        phase("engine")   # fused weights, decode graphs captured (and their kernels compiled)
        try:
            from ..inspect.expr import Limits
            self.engine.expr_limits = Limits(max_elements=opts.expr_max_elements, max_ms=opts.expr_max_ms)
        except ImportError:   # an expression language without limits
            pass
        self.itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.modules = module_tree(model)

        ledger = Ledger(budget=0)
        ledger.weights = weight_bytes(model)
        # the decode graphs' registers and private pool, measured when they were captured
        ledger.workspace = (self._measure_workspace(max_ctx) + self.engine.pieces.nbytes) if cuda else 0
        phase("workspace")
        if cuda:
            torch.cuda.empty_cache()
            # CUDA context, cuBLAS handles and the like: memory the allocator does not see.
            ledger.overhead = max(0, self.nvml.used() - torch.cuda.memory_reserved(self.device)) if self.nvml.handle else 0
        ledger.budget = self._budget_bytes(ledger)
        self.ledger = ledger
        self.allocator_capped = False
        if cuda and opts.cap_allocator:
            total = torch.cuda.get_device_properties(self.device).total_memory
            frac = min(1.0, max(0.0, (ledger.budget - ledger.overhead) / total))
            torch.cuda.set_per_process_memory_fraction(frac, self.device)
            self.allocator_capped = True
        pool_gb = opts.host_pool_gb if opts.host_pool_gb is not None else (96.0 if cuda else 2.0)
        # Chunks: a whole number of planned regions, at least one region of the largest context,
        # about host_pool_chunk_gb (small chunks in order: the first sessions find room within
        # about a second). On CUDA they are pinned in the background: the server serves meanwhile.
        region = self._kv_bytes(opts.plan_context) + self.act_bytes(opts.plan_context)
        largest = self._kv_bytes(max_ctx) + self.act_bytes(max_ctx)
        per_chunk = max(1, -(-largest // region), int(opts.host_pool_chunk_gb * GB // region))
        self.pool = HostPool(int(pool_gb * GB), pin=cuda, chunk_bytes=region * per_chunk, background=cuda,
                             wait_s=opts.host_pool_wait_s, on_done=lambda pool: self._pool_done(pool, log),
                             device=self.device.index if cuda else None)
        self.spill = None
        if opts.spill_dir and opts.spill_gb > 0:
            from ..runtime.spill import SpillFile
            self.spill = SpillFile(opts.spill_dir, int(opts.spill_gb * GB))
        elif opts.spill_gb > 0 or opts.spill_dir:
            raise ValueError("the disk tier needs both --spill-dir and --spill-gb > 0")
        self.hub = EventHub(keep_bytes=int(opts.replay_mb * 1e6), encode=lambda ev: convert.event(ev).SerializeToString())
        self.scheduler = Scheduler(self.engine, Swapper(self.device, self.pool, self.spill), self.pool, ledger, self.hub,
                                   opts.swap_policy, snapshot=convert.session_info, quantum_ms=opts.quantum_ms,
                                   patience_ms=opts.patience_ms)
        self.leases = Leases(self.scheduler, self.clients, opts.lease_s, opts.retire_s)
        self.scheduler.every(min(0.5, max(0.05, opts.lease_s / 4)), self.leases.tick)
        self._samples: dict[tuple[str, bool], tuple[float, pb.TelemetrySample, bytes]] = {}
        self.scheduler.start()
        self.nvml_peak = self.nvml.used()
        self._sampler = threading.Thread(target=self._sample_peaks, daemon=True, name="djinn-nvml")
        self._sampler.start()
        phase("rest")
        self.startup_seconds = time.perf_counter() - t0
        # after the ready line's figures: the first evaluation waits for it instead (inspect/expr.py)
        from ..inspect.expr import warm_up
        self.expr_warm_up = warm_up.run(self._warm_up_expressions)

    # ------------------------------------------------------------ measurement at start-up
    def act_bytes(self, context: int) -> int:
        """Activations a paused session saves: hidden, attn_out, mlp_out, q, each [tokens, dim]."""
        return 4 * context * self.args.dim * self.itemsize

    def _measure_workspace(self, context: int) -> int:
        """Allocator peak of a full-context prefill minus the KV and activations it holds."""
        a, dev = self.args, self.device
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        mem = SessionMemory((a.n_layers, 2, a.n_kv_heads, context, a.head_dim), self.dtype, self.act_bytes(context))
        mem.kv = torch.zeros(mem.kv_shape, dtype=self.dtype, device=dev)
        s = Session(prompt_tokens=[1] * (context - 1), max_new_tokens=2, context=context, memory=mem)
        self.engine.begin(s)
        while s.pass_index == 0 and s.state != FINISHED:
            self.engine.advance(s)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
        del s, mem
        return max(0, peak - self._kv_bytes(context) - self.act_bytes(context))

    def _warm_up_expressions(self) -> None:
        """Loads the kernels (and on the CPU torch's lazily imported helpers) expressions use, so a
        user's first one is not charged their start-up: 3.6-4.2 s on a fresh H200 process (which
        the --expr-max-ms limit would refuse), ~2 s on this CPU. It runs on its own thread once the
        server is up (ServerState.__init__); sessions run meanwhile, expressions wait for it."""
        from ..inspect.expr import evaluate
        from ..inspect.tensors import summarize

        t0 = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)   # a new thread's current device is 0
        h = torch.randn(8, self.args.dim, device=self.device, dtype=self.dtype)
        env = {"hidden": h, "tokens": torch.arange(8, device=self.device)}
        for e in ("hidden[tokens]", "hidden[0, :4]", "norm(hidden)", "mean(hidden)", "std(hidden)", "max(abs(hidden)) > 1",
                  "topk(hidden, 2)", "softmax(hidden)", "argmax(hidden)", "count_nan(hidden)", "hidden * 2 + 1",
                  "cos_sim(hidden, hidden)", "hidden @ hidden[0]"):
            try:
                evaluate(e, env)
            except Exception:  # noqa: BLE001 - a warm-up only
                pass
        summarize(h)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._remeasure_overhead()
        self.startup_phases["expressions_after_ready"] = round(time.perf_counter() - t0, 3)

    def _remeasure_overhead(self) -> None:
        """The kernels just loaded hold device memory the allocator does not see: the ledger's
        overhead (NVML used - allocator reserved, as at start-up) grows by it, and the allocator's
        cap shrinks by as much, so the budget still bounds what NVML sees."""
        if not self.nvml.handle:
            return
        L = self.ledger
        now = max(0, self.nvml.used() - torch.cuda.memory_reserved(self.device))
        if now > L.overhead:
            L.overhead = now
            if self.allocator_capped:
                total = torch.cuda.get_device_properties(self.device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, max(0.0, (L.budget - L.overhead) / total)), self.device)

    def _kv_bytes(self, context: int) -> int:
        return context * self.args.kv_bytes_per_token(self.itemsize)

    def _budget_bytes(self, ledger: Ledger) -> int:
        b = str(self.opts.budget)
        if b.startswith("auto:"):
            frac, c = float(b[5:]), self.opts.plan_context
            per = self._kv_bytes(c) + self.act_bytes(c)
            return int(ledger.fixed + frac * self.opts.plan_sessions * per)
        return int(float(b) * GB)

    @staticmethod
    def _pool_done(pool: HostPool, log) -> None:
        """On the pinning thread, once the pool is complete (or stopped short)."""
        if pool.error:
            log(f"djinn: host pool pinning stopped at {pool.pinned_bytes / GB:.1f} of {pool.nbytes / GB:.1f} GB: "
                f"{pool.error}")
        elif pool.pinned:
            log(f"djinn: host pool pinned: {pool.nbytes / GB:.1f} GB in {len(pool.sizes)} chunks, "
                f"{pool.pin_seconds:.1f} s")

    def _sample_peaks(self) -> None:
        while not self.stopping and self.nvml.handle:
            self.nvml_peak = max(self.nvml_peak, self.nvml.used())
            time.sleep(0.02)

    # ------------------------------------------------------------ answers
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()

    def info(self, who: Identity | None = None) -> pb.ServerInfo:
        a, L = self.args, self.ledger
        who = who or Identity("", True)
        return pb.ServerInfo(
            server_version=__version__,
            model=pb.ModelConfig(name=self.opts.model, n_layers=a.n_layers, dim=a.dim, n_heads=a.n_heads,
                                 n_kv_heads=a.n_kv_heads, intermediate_size=a.intermediate_size,
                                 vocab_size=a.vocab_size, head_dim=a.head_dim, max_context=self.engine.max_context),
            dtype=str(self.dtype).replace("torch.", ""), device=str(self.device), device_name=self.device_name(),
            memory=pb.MemoryInfo(budget_bytes=L.budget, weights_bytes=L.weights, workspace_bytes=L.workspace,
                                 host_pool_bytes=self.pool.nbytes, kv_bytes_per_token=a.kv_bytes_per_token(self.itemsize),
                                 device_total_bytes=self.nvml.total(), allocator_capped=self.allocator_capped,
                                 host_pool_pinned_bytes=self.pool.pinned_bytes,
                                 host_pool_pin_seconds=self.pool.pin_seconds,
                                 spill_bytes=self.spill.nbytes if self.spill else 0),
            modules=[pb.ModuleNode(**m) for m in self.modules], swap_policy=self.opts.swap_policy,
            torch_version=torch.__version__, startup_seconds=self.startup_seconds, event_seq=self.hub.last_seq,
            user=who.user, admin=who.admin, client_id=who.client, lease_seconds=self.opts.lease_s, tls=self.opts.tls,
            device_error=self.scheduler.device_error, server_id=self.server_id)

    def telemetry_sample(self, who: Identity | None = None) -> pb.TelemetrySample:
        """Device totals plus the caller's own sessions (an admin's: all). Built at most every
        10 ms per (user, admin), so hundreds of subscribers cost a few samples per tick."""
        return self._sample(who or Identity("", True))[0]

    def telemetry_wire(self, who: Identity, fresh: bool = False) -> bytes:
        """telemetry_sample's bytes, encoded once per (user, admin) and 10 ms for every stream;
        `fresh`: measured now (a new subscriber's first sample must not predate its request)."""
        return self._sample(who, fresh)[1]

    def _sample(self, who: Identity, fresh: bool = False) -> tuple[pb.TelemetrySample, bytes]:
        key, now = (who.user, who.admin), time.monotonic()
        cached = self._samples.get(key)
        if cached and now - cached[0] < 0.01 and not fresh:
            return cached[1], cached[2]
        sched, L = self.scheduler, self.ledger
        with sched.lock:
            sessions = list(sched.sessions.values())
        resident = sum(s.memory.device_bytes() for s in sessions)
        swapped = sum(s.memory.total_bytes for s in sessions if s.memory.location == HOST)
        alloc = allocator_stats(self.device)
        nv = self.nvml.used()
        self.nvml_peak = max(self.nvml_peak, nv)
        # The ledger as of the worker's last change: summing the sessions' locations here, on another
        # thread, could read one session before its swap-out and the next after its swap-in (both
        # counted: a peak over the budget that never was)
        accounted = L.current or L.accounted()
        connected, streams = self.clients.counts()
        sample = pb.TelemetrySample(
            time=time.time(), budget_bytes=L.budget, weights_bytes=L.weights, workspace_bytes=L.workspace + L.overhead,
            resident_kv_bytes=resident, swapped_kv_bytes=swapped, accounted_bytes=accounted,
            allocator_allocated_bytes=alloc["allocated"], allocator_reserved_bytes=alloc["reserved"],
            allocator_peak_bytes=alloc["peak"], nvml_used_bytes=nv, host_pool_used_bytes=self.pool.used,
            host_pool_bytes=self.pool.nbytes, swap_outs=sched.totals["out"][0], swap_ins=sched.totals["in"][0],
            sessions=[pb.SessionMemory(session_id=s.id, state=convert.STATE_TO_PB[s.state],
                                       kv_location=convert.KV_TO_PB[s.memory.location], kv_bytes=s.memory.total_bytes,
                                       layer=s.layer, point=convert.POINT_TO_PB[s.point],
                                       history_bytes=s.history.nbytes() if s.history else 0,
                                       history_device_bytes=s.history.device_bytes() if s.history else 0)
                      for s in sessions if who.may_see(s.owner)],
            accounted_peak_bytes=max(L.peak, accounted), nvml_peak_bytes=self.nvml_peak,
            auth_failures=self.users.failures, clients_connected=connected, open_streams=streams,
            device_error=sched.device_error, host_pool_pinned_bytes=self.pool.pinned_bytes,
            host_pool_pin_seconds=self.pool.pin_seconds, host_pool_error=self.pool.error, **self._spill_figures())
        wire = sample.SerializeToString()
        self._samples[key] = (now, sample, wire)
        return sample, wire

    def _spill_figures(self) -> dict:
        sp = self.spill
        if sp is None:
            return {}
        return dict(spill_bytes=sp.nbytes, spill_used_bytes=sp.used, spills_out=sp.totals["out"][0],
                    spills_in=sp.totals["in"][0], spill_write_gb_per_s=round(sp.gb_per_s("out"), 3),
                    spill_read_gb_per_s=round(sp.gb_per_s("in"), 3))

    def summary_line(self, address: str) -> str:
        L = self.ledger
        return (f"Djinn serving {self.opts.model} ({self.dtype}) on {self.device} [{self.device_name()}] at {address}: "
                f"weights {L.weights / GB:.2f} GB, workspace {L.workspace / GB:.2f} GB, overhead {L.overhead / GB:.2f} GB, "
                f"budget {L.budget / GB:.2f} GB{' (allocator capped)' if self.allocator_capped else ''}, "
                f"host pool {self.pool.nbytes / GB:.1f} GB{self._pool_state()}, "
                f"{f'spill file {self.spill.nbytes / GB:.1f} GB in {self.opts.spill_dir}, ' if self.spill else ''}max context {self.engine.max_context}, "
                f"swap policy {self.opts.swap_policy}; ready in {self.startup_seconds:.1f} s")

    def _pool_state(self) -> str:
        p = self.pool
        if p.error:
            return f" ({p.pinned_bytes / GB:.1f} GB of it usable: {p.error})"
        if p.pinning:
            return (f" {'pinning' if p.pinned else 'allocating'} in the background ({p.pinned_bytes / GB:.1f} GB so far, "
                    f"{len(p.sizes)} chunks)")
        return f" pinned in {p.pin_seconds:.1f} s" if p.pinned else ""

    def shutdown(self) -> None:
        self.stopping = True
        self.scheduler.shutdown()
        # Pinning may still be running: stop it, wait for the chunks in flight, unregister. If the
        # worker did not stop, a copy may still use the pool: leave its memory registered.
        self.pool.close(timeout=30.0, unregister=not self.scheduler.thread.is_alive())
        if self.spill is not None:
            self.spill.close()
