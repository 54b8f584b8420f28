"""Shared code of the load test (tests/test_load.py), the soak (bench/soak.py) and the clients
bench (bench/clients_bench.py): a real server subprocess, a tokens file, per-RPC latency
statistics, and the random multi-user action loop with its checks.

The action loop is a set of client threads. Each one is one "VS Code window": its own
channel, its own x-djinn-client id, its own Events stream, the sessions it created. It does
random debugger actions on those sessions and checks every answer against a precise list of
statuses that action may get (e.g. Continue on a session it last saw running may race with
the stop: OK or FAILED_PRECONDITION; Continue on a session it saw stop: only OK). Anything
else is recorded as unexpected. At the end every session that was never written to must
have FINISHED with the tokens of an uninterrupted run of the same model (computed in this
process with the server's own Engine on the same named model and seed), and every
`norm(hidden)` it read at a stop must equal, bit for bit, the value at the same stop point of
that uninterrupted run.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import grpc

SERVER_DIR = Path(__file__).resolve().parents[1]
REPO = SERVER_DIR.parent
if str(SERVER_DIR) not in sys.path:
    sys.path.insert(0, str(SERVER_DIR))

from djinn.v1 import djinn_pb2 as pb  # noqa: E402
from djinn.v1 import djinn_pb2_grpc as pb_grpc  # noqa: E402

SC = grpc.StatusCode
OK = "OK"
N_LAYERS, VOCAB = 40, 512          # tiny-40l


def python_exe() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "server", "proto"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------- server process

_HELP: str | None = None


def server_help() -> str:
    global _HELP
    if _HELP is None:
        _HELP = subprocess.run([python_exe(), "-m", "djinn.server.server_main", "--help"], cwd=SERVER_DIR,
                               capture_output=True, text=True, timeout=120).stdout
    return _HELP


def server_supports(flag: str) -> bool:
    return flag in server_help()


class ServerProcess:
    """`python -m djinn.server.server_main ...` on a free loopback port; waits for DJINN_READY."""

    def __init__(self, *args: str, model: str = "tiny-40l", device: str = "cpu", log_path: str | None = None,
                 ready_timeout: float = 180.0, env: dict | None = None):
        self.argv = [python_exe(), "-m", "djinn.server.server_main", "--device", device, "--model", model,
                     "--port", "0", *map(str, args)]
        self.lines: deque[str] = deque(maxlen=2000)
        self._log = open(log_path, "w") if log_path else None
        e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(self.argv, cwd=SERVER_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=e, start_new_session=True)
        self.ready: dict = {}
        got = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if self._log:
                    self._log.write(line)
                    self._log.flush()
                if line.startswith("DJINN_READY "):
                    self.ready = json.loads(line[len("DJINN_READY "):])
                    got.set()
            got.set()

        self._pump = threading.Thread(target=pump, daemon=True, name="server-stdout")
        self._pump.start()
        if not got.wait(ready_timeout) or not self.ready:
            self.stop()
            raise RuntimeError("the server did not get ready:\n" + "\n".join(self.lines))
        self.address: str = self.ready["address"]
        self.pid: int = self.proc.pid
        self.command = " ".join(self.argv)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._pump.join(5)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@dataclass
class User:
    name: str
    token: str
    admin: bool = False


def make_users(n: int, seed: int = 0, admin: bool = True) -> list[User]:
    """n ordinary users (u0..), plus one admin ("ops") when admin is true."""
    r = random.Random(seed)
    users = [User(f"u{i}", "t-%032x" % r.getrandbits(128)) for i in range(n)]
    if admin:
        users.append(User("ops", "t-%032x" % r.getrandbits(128), admin=True))
    return users


def write_tokens_file(path, users: list[User]) -> str:
    with open(path, "w") as f:
        f.write("# NAME TOKEN [admin]\n")
        for u in users:
            f.write(f"{u.name} {u.token}{' admin' if u.admin else ''}\n")
    return str(path)


# ---------------------------------------------------------------------------- statistics

def percentile(xs, q: float) -> float:
    """Nearest-rank percentile of xs (q in 0..100)."""
    if not xs:
        return 0.0
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def lat_summary(xs) -> dict:
    return dict(n=len(xs), p50_ms=round(percentile(xs, 50), 3), p90_ms=round(percentile(xs, 90), 3),
                p99_ms=round(percentile(xs, 99), 3), max_ms=round(max(xs), 3) if xs else 0.0)


class Stats:
    """Latency per RPC, counts per (action, status), unexpected answers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.lat_action: dict[str, list[float]] = defaultdict(list)
        self.counts: Counter = Counter()
        self.unexpected: list[str] = []
        self.notes: Counter = Counter()
        self.slow: list[tuple] = []         # (unix time at the start, rpc, action, ms) of calls over 250 ms

    def record(self, rpc: str, action: str, ms: float, status: str) -> None:
        with self.lock:
            if ms > 250 and len(self.slow) < 1000:
                self.slow.append((round(time.time() - ms / 1e3, 3), rpc, action, round(ms, 1)))
            self.lat[rpc].append(ms)
            self.lat_action[action].append(ms)
            self.counts[(action, status)] += 1

    def bad(self, what: str) -> None:
        with self.lock:
            if len(self.unexpected) < 10_000:
                self.unexpected.append(what)

    def note(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.notes[key] += n

    def latency(self, by_action: bool = False) -> dict:
        with self.lock:
            return {k: lat_summary(v) for k, v in sorted((self.lat_action if by_action else self.lat).items())}

    def count_table(self) -> dict:
        with self.lock:
            out: dict = defaultdict(dict)
            for (a, s), n in sorted(self.counts.items()):
                out[a][s] = n
            return dict(out)

    def latency_table(self) -> str:
        rows = [f"{'rpc':<16}{'n':>8}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
        for k, v in self.latency().items():
            rows.append(f"{k:<16}{v['n']:>8}{v['p50_ms']:>10.2f}{v['p90_ms']:>10.2f}{v['p99_ms']:>10.2f}{v['max_ms']:>10.1f}")
        return "\n".join(rows)


# ---------------------------------------------------------------------------- one client connection

def metadata(token: str | None, client_id: str | None) -> list[tuple[str, str]]:
    md = []
    if token is not None:
        md.append(("x-djinn-token", token))
    if client_id is not None:
        md.append(("x-djinn-client", client_id))
    return md


class Conn:
    """A channel, a stub, the caller's metadata; every call timed and its status recorded."""

    def __init__(self, address: str, token: str | None, client_id: str | None, stats: Stats | None = None,
                 timeout: float = 60.0):
        self.address, self.token, self.client_id = address, token, client_id
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = pb_grpc.DjinnStub(self.channel)
        self.md = metadata(token, client_id)
        self.stats = stats
        self.timeout = timeout

    def call(self, rpc: str, req, action: str | None = None, md=None):
        """(status name, response or None, details). GetTensor's response is the list of chunks."""
        fn = getattr(self.stub, rpc)
        t0 = time.perf_counter()
        try:
            if rpc == "GetTensor":
                resp = list(fn(req, metadata=md if md is not None else self.md, timeout=self.timeout))
            else:
                resp = fn(req, metadata=md if md is not None else self.md, timeout=self.timeout)
            status, details = OK, ""
        except grpc.RpcError as e:
            resp, status, details = None, e.code().name, e.details() or ""
        ms = (time.perf_counter() - t0) * 1e3
        if self.stats is not None:
            self.stats.record(rpc, action or rpc, ms, status)
        return status, resp, details

    def close(self) -> None:
        self.channel.close()


class EventFeed:
    """One Events stream read on its own thread into a queue; can be dropped and resubscribed
    from the last seq it received (LAGGED: from that event's seq)."""

    def __init__(self, conn: Conn, since_seq: int = 0, stats: Stats | None = None):
        self.conn, self.stats = conn, stats
        self.q: queue.Queue = queue.Queue()
        self.last_seq = since_seq
        self.call = None
        self.thread = None
        self.lagged = 0
        self.resubscribes = 0
        self.errors: list[str] = []
        self._cancelled = False
        self.start(since_seq)

    def start(self, since_seq: int) -> None:
        self._cancelled = False
        call = self.conn.stub.Events(pb.EventsRequest(since_seq=since_seq), metadata=self.conn.md)
        self.call = call

        def pump():
            try:
                for ev in call:
                    if ev.seq > self.last_seq:
                        self.last_seq = ev.seq
                    self.q.put(ev)
                    if ev.kind == pb.EVENT_KIND_LAGGED:
                        self.lagged += 1
                        self.last_seq = ev.seq
                self.q.put(("ended", "OK"))
            except grpc.RpcError as e:
                if not (self._cancelled and e.code() == SC.CANCELLED):
                    self.errors.append(f"{e.code().name}: {e.details()}")
                    self.q.put(("ended", e.code().name))
                else:
                    self.q.put(("ended", "CANCELLED"))

        self.thread = threading.Thread(target=pump, daemon=True, name="events")
        self.thread.start()

    def drop(self) -> None:
        self._cancelled = True
        if self.call is not None:
            self.call.cancel()
        if self.thread is not None:
            self.thread.join(10)

    def resubscribe(self) -> None:
        self.drop()
        self.resubscribes += 1
        self.start(self.last_seq)

    def get(self, timeout: float):
        try:
            return self.q.get(timeout=timeout) if timeout > 0 else self.q.get_nowait()
        except queue.Empty:
            return None


# ---------------------------------------------------------------------------- references

class References:
    """Uninterrupted runs in this process: the same Engine, named model and seed as the server's
    default (build_model(name, cpu, float32, seed)). Cached by (prompt, max_new_tokens)."""

    def __init__(self, model: str = "tiny-40l", seed: int = 0, max_context: int = 1024, batch_rows: int | None = None):
        import torch

        from djinn.model.build import build_model
        from djinn.runtime.engine import Engine

        torch.set_grad_enabled(False)
        dev = torch.device("cpu")
        m, tok, _ = build_model(model, dev, torch.float32, seed)
        if batch_rows is None:   # the server's default block size: a decode row's numbers depend on it
            from djinn.server.state import Options
            batch_rows = Options(model=model).batch_rows
        self.engine = Engine(m, tok, dev, torch.float32, max_context, batch_rows=batch_rows)
        self.cache: dict = {}

    def run(self, prompt: list[int], max_new: int, probes=()) -> tuple[list[int], dict]:
        """Tokens, and norm(hidden) at each probe (token_index, layer, point), by the server's own
        expression code, on the same stop points of an uninterrupted pass."""
        import torch

        from djinn.runtime import tensor_ops
        from djinn.runtime.session import FINISHED, Session
        from djinn.runtime.swap import SessionMemory

        key = (tuple(prompt), max_new, tuple(sorted(set(probes))))
        if key in self.cache:
            return self.cache[key]
        e, a = self.engine, self.engine.args
        want = set(probes)
        ctx = len(prompt) + max_new
        mem = SessionMemory((a.n_layers, 2, a.n_kv_heads, ctx, a.head_dim), e.dtype, 0)
        mem.kv = torch.zeros(mem.kv_shape, dtype=e.dtype, device=e.device)
        s = Session(list(prompt), max_new, ctx, mem)
        e.begin(s)
        norms = {}
        while s.state != FINISHED:
            here = (s.pass_index, s.layer, s.point)
            if here in want:
                norms[here] = tensor_ops.evaluate_expression(e, s, "norm(hidden)")["scalar"]
            e.advance(s)
        out = (list(s.generated), norms)
        self.cache[key] = out
        return out


# ---------------------------------------------------------------------------- the random load

POINT_NAME = {pb.STOP_POINT_LAYER: "layer", pb.STOP_POINT_ATTN: "attn", pb.STOP_POINT_MLP: "mlp",
              pb.STOP_POINT_UNSPECIFIED: "layer"}
EXPR_ANY = ["norm(hidden)", "hidden[0, :4]", "mean(hidden)", "max(abs(hidden))", "std(hidden[-1])", "token",
            "layer", "argmax(logits[-1])", "topk(logits[-1], 3)", "norm(k_cache)", "shape(hidden)", "sum(tokens)",
            "norm(q)", "hidden[-1, 0] * 2 + 1", "count_nan(hidden)", "softmax(logits[-1])[:5]", "phase == \"decode\""]
EXPR_ATTN = ["mean(attn_out)", "cos_sim(hidden, attn_out)", "norm(attn_out[-1])", "norm(k)"]
EXPR_MLP = ["mean(mlp_out)", "norm(mlp_out + attn_out)"]


@dataclass
class LoadConfig:
    clients_per_user: int = 5
    sessions: int = 200                  # in all (quota mode); 0 = until the deadline
    seconds: float = 0.0                 # deadline mode when > 0
    live_per_client: int = 3
    prompt_len: tuple = (4, 12)
    max_new: tuple = (2, 3)
    context: int = 32
    breakpoints: tuple = (1, 2)          # how many per session
    prompt_pool: int = 50                # prompts drawn from a fixed pool: one reference run per prompt
                                         # (a reference costs a full run in this process; 0 = every prompt new)
    doomed: float = 0.08                 # share of sessions closed early on purpose
    seed: int = 1234
    check_owners: bool = True            # multi-user server (tokens file)
    abandoners: int = 1                  # clients that create sessions and vanish (lease expiry)


@dataclass
class Tracked:
    id: int
    owner: str
    client: str
    prompt: list
    max_new: int
    state: str = "running"               # running | paused | finished | closed | lost
    position: tuple = (0, 0, "layer")    # (token_index, layer, point) while paused
    expect_resumed: bool = False         # ignore stale STOPPED events until RESUMED arrives
    written: bool = False
    first_write: tuple | None = None     # position of the first write (norms before it are checked)
    doomed: bool = False
    close_sent: bool = False
    tokens: list | None = None
    lost: str = ""
    stops: int = 0
    norms: dict = field(default_factory=dict)   # (token_index, layer, point) -> norm(hidden) read there
    bps_cleared: bool = False
    order: int = 0                       # how many stops before this one (for writes)


class Registry:
    """Every session created, by id, and by user (hostile calls pick other users' ids)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sessions: dict[int, Tracked] = {}
        self.by_user: dict[str, list[int]] = defaultdict(list)
        self.seen: list[tuple[str, str, set]] = []   # (user, where, ids) to check after the run

    def add(self, t: Tracked) -> None:
        with self.lock:
            self.sessions[t.id] = t
            self.by_user[t.owner].append(t.id)

    def other_user_id(self, user: str, rng: random.Random) -> int | None:
        with self.lock:
            others = [u for u in self.by_user if u != user and self.by_user[u]]
            if not others:
                return None
            ids = self.by_user[rng.choice(others)]
            return ids[rng.randrange(len(ids))]

    def saw(self, user: str, where: str, ids) -> None:
        with self.lock:
            self.seen.append((user, where, set(ids)))


def random_breakpoints(rng: random.Random, lo_hi=(1, 3), first_id=1):
    n = rng.randint(*lo_hi)
    layers = rng.sample(range(N_LAYERS), n)
    pts = [pb.STOP_POINT_LAYER, pb.STOP_POINT_LAYER, pb.STOP_POINT_ATTN, pb.STOP_POINT_MLP]
    return [pb.Breakpoint(id=first_id + i, layer=l, point=rng.choice(pts)) for i, l in enumerate(layers)]


class ClientWorker:
    """One window of one user: its own channel, client id and Events stream; random actions."""

    def __init__(self, idx: int, user: User, users: list[User], address: str, cfg: LoadConfig, stats: Stats,
                 registry: Registry, quota: int, deadline: float, prompts: list | None):
        self.idx, self.user, self.users, self.address = idx, user, users, address
        self.cfg, self.stats, self.reg, self.quota, self.deadline = cfg, stats, registry, quota, deadline
        self.prompts = prompts
        self.rng = random.Random(cfg.seed * 7919 + idx)
        self.client_id = f"load-{user.name}-w{idx}"
        self.conn = Conn(address, user.token, self.client_id, stats)
        self.mine: dict[int, Tracked] = {}
        self.created = 0
        self.windows = itertools.count(1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"client-{idx}", daemon=True)
        self.last_seq_done = 0

    # -------------------------------------------------------------- checks
    def expect(self, action: str, sid: int | None, got: tuple, allowed: tuple) -> bool:
        status, _, details = got
        if status not in allowed:
            self.stats.bad(f"{self.client_id} {action} session {sid}: {status} {details!r} (allowed {allowed})")
            return False
        return True

    # -------------------------------------------------------------- events
    def _handle(self, ev) -> None:
        if isinstance(ev, tuple):           # ("ended", status)
            if ev[1] == "CANCELLED":
                return                      # this client dropped it (resubscribe)
            if ev[1] != "OK":
                self.stats.bad(f"{self.client_id} Events stream ended with {ev[1]}: {self.feed.errors[-1:]}")
            # the server ended the stream (after LAGGED, or otherwise): subscribe again from the last seq
            self.feed.start(self.feed.last_seq)
            self.stats.note("events_restarted")
            return
        if ev.seq <= self.last_seq_done:
            return                          # a replayed duplicate
        self.last_seq_done = ev.seq
        k = ev.kind
        self.stats.note("event_" + pb.EventKind.Name(k)[11:].lower())
        if k == pb.EVENT_KIND_LAGGED:
            self.stats.note("lagged")
            self._refresh_all()
            return
        if k == pb.EVENT_KIND_DEVICE_FAILED:
            self.stats.bad(f"{self.client_id} DEVICE_FAILED: {ev.text}")
            return
        if ev.session_id == 0:
            if k == pb.EVENT_KIND_ERROR:
                self.stats.bad(f"{self.client_id} server error event: {ev.text}")
            return
        if self.cfg.check_owners and ev.HasField("session") and ev.session.owner and ev.session.owner != self.user.name:
            self.stats.bad(f"{self.client_id} saw an event of session {ev.session_id} of {ev.session.owner}")
        self.reg.saw(self.user.name, "events", [ev.session_id])
        t = self.mine.get(ev.session_id)
        if t is None:
            return
        if k == pb.EVENT_KIND_RESUMED:
            if t.state in ("running", "paused"):
                t.state, t.expect_resumed = "running", False
        elif k == pb.EVENT_KIND_STOPPED:
            if t.expect_resumed or t.state not in ("running", "paused"):
                return
            p = ev.session.position
            t.state, t.position = "paused", (p.token_index, p.layer, POINT_NAME[p.point])
            t.stops += 1
        elif k == pb.EVENT_KIND_FINISHED:
            t.state, t.tokens = "finished", list(ev.session.generated_tokens)
        elif k == pb.EVENT_KIND_CLOSED:
            if not t.close_sent:
                t.state, t.lost = "lost", f"closed by the server: {ev.text!r}"
                self.stats.bad(f"{self.client_id} session {t.id} closed by the server: {ev.text!r}")
            elif t.state not in ("lost", "finished"):
                t.state = "closed"
        elif k == pb.EVENT_KIND_ERROR:
            t.state, t.lost = "lost", f"error: {ev.text}"
            self.stats.bad(f"{self.client_id} session {t.id} failed: {ev.text}")

    def _drain(self, wait: float = 0.0) -> None:
        ev = self.feed.get(wait)
        while ev is not None:
            self._handle(ev)
            ev = self.feed.get(0)

    def _refresh_all(self) -> None:
        """After LAGGED: re-read each session (events since the lag are replayed where retained)."""
        for t in list(self.mine.values()):
            if t.state in ("running", "paused"):
                st, info, _ = self.conn.call("GetSession", pb.SessionRef(session_id=t.id), "refresh")
                if st == OK and info.state == pb.SESSION_STATE_FINISHED:
                    t.state, t.tokens = "finished", list(info.generated_tokens)
                elif st == OK and info.state == pb.SESSION_STATE_PAUSED and not t.expect_resumed:
                    p = info.position
                    t.state, t.position = "paused", (p.token_index, p.layer, POINT_NAME[p.point])

    # -------------------------------------------------------------- the loop
    def _main(self) -> None:
        try:
            st, info, det = self.conn.call("GetInfo", pb.GetInfoRequest())
            if st != OK:
                self.stats.bad(f"{self.client_id} GetInfo: {st} {det}")
                return
            if self.cfg.check_owners and (info.user != self.user.name or info.client_id != self.client_id):
                self.stats.bad(f"{self.client_id} GetInfo says user {info.user!r} client {info.client_id!r}")
            self.feed = EventFeed(self.conn, info.event_seq, self.stats)
            self.last_seq_done = info.event_seq
            time.sleep(0.05)
            self._loop()
        except BaseException as e:  # noqa: BLE001 - reported by the runner
            self.error = e
            self.stats.bad(f"{self.client_id} crashed: {type(e).__name__}: {e}")
        finally:
            try:
                self.feed.drop()
            except Exception:  # noqa: BLE001
                pass
            self.conn.close()

    def winding(self) -> bool:
        if self.deadline and time.monotonic() >= self.deadline:
            return True
        return bool(self.quota) and self.created >= self.quota

    def _loop(self) -> None:
        r = self.rng
        hard_end = (self.deadline or time.monotonic()) + 600
        while True:
            self._drain()
            live = [t for t in self.mine.values() if t.state in ("running", "paused")]
            finished = [t for t in self.mine.values() if t.state == "finished" and not t.close_sent]
            if self.winding() and not live and not finished:
                return
            if time.monotonic() > hard_end:
                self.stats.bad(f"{self.client_id} gave up: sessions still live {[t.id for t in live]}")
                return
            if not self.winding() and len(live) < self.cfg.live_per_client and (not live or r.random() < 0.3):
                self.create()
                continue
            if finished and r.random() < 0.5:
                self.retire(r.choice(finished))
                continue
            paused = [t for t in live if t.state == "paused"]
            running = [t for t in live if t.state == "running"]
            x = r.random()
            if paused and x > 0.04:
                self.act_paused(r.choice(paused))
            elif paused or x < 0.01:
                r.choice([self.resubscribe, self.second_window, self.hostile, self.hostile])()
            elif running and x < 0.02:
                self.act_running(r.choice(running))
            else:
                self._drain(0.05)

    # -------------------------------------------------------------- actions
    def create(self) -> None:
        r, c = self.rng, self.cfg
        if self.prompts:
            prompt, max_new = self.prompts[r.randrange(len(self.prompts))]
        else:
            prompt = [r.randrange(3, VOCAB) for _ in range(r.randint(*c.prompt_len))]
            max_new = r.randint(*c.max_new)
        bps = random_breakpoints(r, c.breakpoints)
        req = pb.CreateSessionRequest(prompt_tokens=prompt, max_new_tokens=max_new, context=c.context,
                                      breakpoints=bps, stop_on_entry=r.random() < 0.1,
                                      label=f"{self.client_id}#{self.created}")
        got = self.conn.call("CreateSession", req, "create")
        self.created += 1
        if not self.expect("create", None, got, (OK,)):
            return
        info = got[1]
        if self.cfg.check_owners and info.owner != self.user.name:
            self.stats.bad(f"{self.client_id} created session {info.id} owned by {info.owner!r}")
        t = Tracked(info.id, self.user.name, self.client_id, prompt, max_new, doomed=r.random() < c.doomed)
        self.mine[t.id] = t
        self.reg.add(t)

    def retire(self, t: Tracked) -> None:
        ref = pb.SessionRef(session_id=t.id)
        if self.rng.random() < 0.3:
            st, info, det = self.conn.call("GetSession", ref, "get_finished")
            if self.expect("get_finished", t.id, (st, info, det), (OK, "NOT_FOUND")) and st == OK:
                if info.state != pb.SESSION_STATE_FINISHED or list(info.generated_tokens) != t.tokens:
                    self.stats.bad(f"{self.client_id} GetSession {t.id} after FINISHED: state "
                                   f"{pb.SessionState.Name(info.state)} tokens {list(info.generated_tokens)} vs {t.tokens}")
        t.close_sent = True
        got = self.conn.call("CloseSession", ref, "close_finished")
        self.expect("close_finished", t.id, got, (OK, "NOT_FOUND"))

    def _go(self, t: Tracked, rpc: str, req, action: str) -> None:
        """Continue or Step a session this client saw stop: only OK is right."""
        got = self.conn.call(rpc, req, action)
        if self.expect(action, t.id, got, (OK,)):
            t.state, t.expect_resumed = "running", True

    def act_paused(self, t: Tracked) -> None:
        r = self.rng
        ref = pb.SessionRef(session_id=t.id)
        sid = t.id
        tok, layer, point = t.position
        if t.doomed and r.random() < 0.15:
            t.close_sent = True
            got = self.conn.call("CloseSession", ref, "close_paused")
            if self.expect("close_paused", sid, got, (OK,)):
                t.state = "closed"
            return
        if self.winding():
            if not t.bps_cleared:
                got = self.conn.call("SetBreakpoints", pb.SetBreakpointsRequest(session_id=sid), "clear_breakpoints")
                self.expect("clear_breakpoints", sid, got, (OK,))
                t.bps_cleared = True
            if r.random() < 0.7:
                return self._go(t, "Continue", ref, "continue")
        x = r.random()
        if x < 0.35:
            self._go(t, "Continue", ref, "continue")
        elif x < 0.45:
            kind = r.choice([pb.STEP_KIND_SUBLAYER, pb.STEP_KIND_LAYER, pb.STEP_KIND_TOKEN, pb.STEP_KIND_UNSPECIFIED])
            self._go(t, "Step", pb.StepRequest(session_id=sid, kind=kind), "step_" + pb.StepKind.Name(kind)[10:].lower())
        elif x < 0.55:
            # norm(hidden): checked bit for bit against the uninterrupted run afterwards
            got = self.conn.call("Evaluate", pb.EvaluateRequest(session_id=sid, expression="norm(hidden)"), "evaluate")
            if self.expect("evaluate", sid, got, (OK,)):
                if not t.written:
                    t.norms[t.position] = got[1].scalar
        elif x < 0.65:
            exprs = EXPR_ANY + (EXPR_ATTN if point in ("attn", "mlp") else []) + (EXPR_MLP if point == "mlp" else [])
            e = r.choice(exprs)
            got = self.conn.call("Evaluate", pb.EvaluateRequest(session_id=sid, expression=e), "evaluate")
            if self.expect("evaluate", sid, got, (OK,)) and got[1].is_tensor and r.random() < 0.5:
                g2 = self.conn.call("GetTensor", pb.GetTensorRequest(session_id=sid, name=got[1].result_name),
                                    "get_result")
                if self.expect("get_result", sid, g2, (OK,)):
                    self._check_chunks(sid, g2[1], list(got[1].summary.shape))
        elif x < 0.68:
            got = self.conn.call("SetTensor", pb.SetTensorRequest(session_id=sid, name="hidden", mode=pb.WRITE_MODE_ADD,
                                                                  has_scalar=True, scalar=0.5), "set_tensor")
            self.expect("set_tensor", sid, got, (OK,))
            if not t.written:       # counted as written even if refused: its output is not checked
                t.written, t.first_write = True, t.position
        elif x < 0.75:
            name = "hidden" if point == "layer" or r.random() < 0.5 else "attn_out"
            got = self.conn.call("LogitLens", pb.LogitLensRequest(session_id=sid, top_k=r.randint(1, 5), tensor=name,
                                                                  **({"position": 0} if r.random() < 0.3 else {})),
                                 "logit_lens")
            if self.expect("logit_lens", sid, got, (OK,)):
                probs = [x.prob for x in got[1].top]
                if probs != sorted(probs, reverse=True) or not probs:
                    self.stats.bad(f"{self.client_id} logit lens of {sid} not sorted: {probs}")
        elif x < 0.85:
            name, sl = r.choice([("hidden", [pb.DimSlice(start=0, stop=1), pb.DimSlice(start=0, stop=8)]),
                                 ("hidden", [pb.DimSlice(start=-1, stop=0)]), ("hidden", []),
                                 ("k_cache", [pb.DimSlice(start=0, stop=1)]), ("tokens", [])])
            got = self.conn.call("GetTensor", pb.GetTensorRequest(session_id=sid, name=name, slice=sl,
                                                                  chunk_bytes=r.choice([0, 256, 4096])), "get_tensor")
            if self.expect("get_tensor", sid, got, (OK,)):
                self._check_chunks(sid, got[1], None)
        elif x < 0.88:
            got = self.conn.call("ListTensors", ref, "list_tensors")
            if self.expect("list_tensors", sid, got, (OK,)):
                names = {x.name for x in got[1].tensors}
                if "hidden" not in names:
                    self.stats.bad(f"{self.client_id} ListTensors of {sid} without hidden: {names}")
        elif x < 0.92:
            got = self.conn.call("GetSession", ref, "get_session")
            if self.expect("get_session", sid, got, (OK,)):
                info = got[1]
                if info.state != pb.SESSION_STATE_PAUSED:
                    self.stats.bad(f"{self.client_id} session {sid} is {pb.SessionState.Name(info.state)}, seen paused")
        elif x < 0.96:
            bps = random_breakpoints(r, self.cfg.breakpoints, first_id=100)
            got = self.conn.call("SetBreakpoints", pb.SetBreakpointsRequest(session_id=sid, breakpoints=bps),
                                 "set_breakpoints")
            if self.expect("set_breakpoints", sid, got, (OK,)):
                if not all(b.verified for b in got[1].breakpoints) or len(got[1].breakpoints) != len(bps):
                    self.stats.bad(f"{self.client_id} breakpoints of {sid} not verified: {got[1]}")
        else:
            self.act_running(t)   # the racy ones, on a paused session

    def act_running(self, t: Tracked) -> None:
        r, sid = self.rng, t.id
        ref = pb.SessionRef(session_id=sid)
        x = r.random()
        if x < 0.4:
            # A running session may have stopped or finished since: OK or FAILED_PRECONDITION.
            was_running = t.state == "running"
            got = self.conn.call("Pause", ref, "pause")
            self.expect("pause", sid, got, (OK, "FAILED_PRECONDITION") if was_running else (OK,))
            return
        if x < 0.7:
            # It may have stopped since (the STOPPED event is on its way): OK or FAILED_PRECONDITION.
            was_running = t.state == "running"
            got = self.conn.call("Continue", ref, "continue_racy")
            if self.expect("continue_racy", sid, got, (OK, "FAILED_PRECONDITION") if was_running else (OK,)):
                if got[0] == OK:
                    t.state, t.expect_resumed = "running", True
            return
        if x < 0.85:
            got = self.conn.call("Evaluate", pb.EvaluateRequest(session_id=sid, expression="norm(hidden)"),
                                 "evaluate_racy")
            self.expect("evaluate_racy", sid, got, (OK, "FAILED_PRECONDITION") if t.state == "running" else (OK,))
            return
        got = self.conn.call("GetSession", ref, "get_session")
        self.expect("get_session", sid, got, (OK,))

    def _check_chunks(self, sid: int, chunks, shape) -> None:
        if not chunks:
            self.stats.bad(f"{self.client_id} GetTensor of {sid}: no chunks")
            return
        head = chunks[0]
        data = b"".join(c.data for c in chunks)
        n = 1
        for d in head.slice_shape:
            n *= d
        item = {"float32": 4, "int64": 8, "bfloat16": 2, "float16": 2, "bool": 1, "int32": 4}.get(head.dtype, 0)
        if len(data) != head.total_bytes or (item and len(data) != n * item) or (shape is not None and list(head.slice_shape) != shape):
            self.stats.bad(f"{self.client_id} GetTensor of {sid}: {len(data)} bytes, total {head.total_bytes}, "
                           f"shape {list(head.slice_shape)} {head.dtype}")
        offs = [c.offset for c in chunks]
        if offs != sorted(offs) or offs[0] != 0:
            self.stats.bad(f"{self.client_id} GetTensor of {sid}: offsets {offs[:5]}")

    def resubscribe(self) -> None:
        """Drop the Events stream and subscribe again from the last seq received: nothing is lost."""
        self.feed.drop()
        # what was queued before the drop is handled first; then the replay carries on from last_seq
        while True:
            ev = self.feed.get(0)
            if ev is None:
                break
            if not isinstance(ev, tuple):
                self._handle(ev)
        self.feed.resubscribes += 1
        self.stats.note("resubscribe")
        self.feed.start(self.feed.last_seq)

    def second_window(self) -> None:
        """Another window of the same user (its own client id): sees exactly this user's sessions."""
        r = self.rng
        cid = f"{self.client_id}-attach{next(self.windows)}"
        w = Conn(self.address, self.user.token, cid, self.stats)
        try:
            mine_live = {t.id for t in self.mine.values() if t.state in ("running", "paused")}
            got = w.call("ListSessions", pb.ListSessionsRequest(), "attach_list")
            if self.expect("attach_list", None, got, (OK,)):
                ids = {s.id for s in got[1].sessions}
                owners = {s.owner for s in got[1].sessions}
                self.reg.saw(self.user.name, "ListSessions", ids)
                if self.cfg.check_owners and owners - {self.user.name}:
                    self.stats.bad(f"{cid} ListSessions shows sessions of {owners - {self.user.name}}")
                # this window's own live sessions cannot have gone (only this thread closes them)
                missing = {i for i in mine_live if self.mine[i].state in ("running", "paused")} - ids
                if missing:
                    self.stats.bad(f"{cid} ListSessions misses live sessions {sorted(missing)}")
            if r.random() < 0.5:
                tel = w.stub.Telemetry(pb.TelemetryRequest(interval_ms=50), metadata=w.md, timeout=30)
                t0 = time.perf_counter()
                try:
                    sample = next(tel)
                    self.stats.record("Telemetry", "attach_telemetry", (time.perf_counter() - t0) * 1e3, OK)
                    self.reg.saw(self.user.name, "Telemetry", {s.session_id for s in sample.sessions})
                except grpc.RpcError as e:
                    self.stats.record("Telemetry", "attach_telemetry", (time.perf_counter() - t0) * 1e3, e.code().name)
                    self.stats.bad(f"{cid} Telemetry: {e.code().name} {e.details()}")
                finally:
                    tel.cancel()
            if mine_live and r.random() < 0.6:
                sid = r.choice(sorted(mine_live))
                t = self.mine[sid]
                got = w.call("GetSession", pb.SessionRef(session_id=sid), "attach_get")
                # it may have finished and been retired meanwhile only if it was not live; it was
                allowed = (OK,) if t.state in ("running", "paused") else (OK, "NOT_FOUND")
                self.expect("attach_get", sid, got, allowed)
                # the second window sets a breakpoint of its own, then leaves (Detach terminate):
                # its breakpoint goes, nothing of the first window's is closed
                if t.state in ("running", "paused") and r.random() < 0.5:
                    got = w.call("SetBreakpoints", pb.SetBreakpointsRequest(
                        session_id=sid, breakpoints=[pb.Breakpoint(id=900, layer=r.randrange(N_LAYERS))]),
                        "attach_set_breakpoints")
                    self.expect("attach_set_breakpoints", sid, got, (OK,))
                    got = w.call("Detach", pb.DetachRequest(terminate=True), "attach_detach")
                    if self.expect("attach_detach", sid, got, (OK,)):
                        if list(got[1].closed_session_ids):
                            self.stats.bad(f"{cid} Detach closed {list(got[1].closed_session_ids)}: it created none")
                        if got[1].breakpoints_removed != 1:
                            self.stats.bad(f"{cid} Detach removed {got[1].breakpoints_removed} breakpoints, set 1")
        finally:
            w.close()

    def hostile(self) -> None:
        """Another user's session id: NOT_FOUND, as if it did not exist; a wrong token: UNAUTHENTICATED."""
        r = self.rng
        if r.random() < 0.2:
            got = self.conn.call("GetInfo", pb.GetInfoRequest(), "bad_token", md=metadata("nope-" + self.user.token, self.client_id))
            self.expect("bad_token", None, got, ("UNAUTHENTICATED",) if self.cfg.check_owners else (OK, "UNAUTHENTICATED"))
            return
        if not self.cfg.check_owners:
            return
        sid = self.reg.other_user_id(self.user.name, r)
        if sid is None:
            return
        rpc, req = r.choice([
            ("GetSession", pb.SessionRef(session_id=sid)), ("Continue", pb.SessionRef(session_id=sid)),
            ("Pause", pb.SessionRef(session_id=sid)), ("CloseSession", pb.SessionRef(session_id=sid)),
            ("Step", pb.StepRequest(session_id=sid, kind=pb.STEP_KIND_LAYER)),
            ("Evaluate", pb.EvaluateRequest(session_id=sid, expression="norm(hidden)")),
            ("GetTensor", pb.GetTensorRequest(session_id=sid, name="hidden")),
            ("SetTensor", pb.SetTensorRequest(session_id=sid, name="hidden", has_scalar=True, scalar=1.0)),
            ("SetBreakpoints", pb.SetBreakpointsRequest(session_id=sid, breakpoints=[pb.Breakpoint(id=1, layer=1)])),
            ("LogitLens", pb.LogitLensRequest(session_id=sid)), ("ListTensors", pb.SessionRef(session_id=sid))])
        got = self.conn.call(rpc, req, "hostile_" + rpc)
        self.expect("hostile_" + rpc, sid, got, ("NOT_FOUND",))


POINT_ORDER = {"layer": 0, "attn": 1, "mlp": 2}


def _pos_key(p: tuple) -> tuple:
    return (p[0], p[1], POINT_ORDER[p[2]])


class Abandoner:
    """A window that creates sessions, sees them stop, and vanishes without a word (laptop lid
    closed): after --lease-s its sessions must be closed, with the reason, and their memory freed."""

    def __init__(self, idx: int, user: User, address: str, stats: Stats, registry: Registry, n: int = 2):
        self.client_id = f"load-abandoner-{idx}"
        self.user, self.stats, self.reg = user, stats, registry
        self.conn = Conn(address, user.token, self.client_id, stats)
        self.ids: list[int] = []
        self.left_at = 0.0
        self.n = n

    def run(self) -> None:
        feed = EventFeed(self.conn, 0, self.stats)
        time.sleep(0.05)
        for i in range(self.n):
            got = self.conn.call("CreateSession", pb.CreateSessionRequest(
                prompt_tokens=[3 + i, 40, 41, 42], max_new_tokens=3, context=16,
                breakpoints=[pb.Breakpoint(id=1, layer=2 + i)]), "abandoner_create")
            if got[0] != OK:
                self.stats.bad(f"{self.client_id} create: {got[0]} {got[2]}")
                continue
            t = Tracked(got[1].id, self.user.name, self.client_id, [3 + i, 40, 41, 42], 3, doomed=True)
            t.state = "abandoned"
            self.reg.add(t)
            self.ids.append(t.id)
        waiting, end = set(self.ids), time.monotonic() + 60
        while waiting and time.monotonic() < end:
            ev = feed.get(0.5)
            if ev is not None and not isinstance(ev, tuple) and ev.kind == pb.EVENT_KIND_STOPPED:
                waiting.discard(ev.session_id)
        if waiting:
            self.stats.bad(f"{self.client_id} sessions {sorted(waiting)} never stopped")
        feed.drop()
        self.conn.close()
        self.left_at = time.monotonic()


class Watcher:
    """The admin's view during the run: an Events stream of everything and telemetry at 4 Hz."""

    def __init__(self, address: str, admin: User | None, stats: Stats):
        self.conn = Conn(address, admin.token if admin else None, "load-watcher", None)
        self.feed = EventFeed(self.conn, 0, None)
        self.closed: dict[int, tuple[float, str]] = {}
        self.kinds: Counter = Counter()
        self.peaks: Counter = Counter()
        self.samples = 0
        self.stop = threading.Event()
        self.t_events = threading.Thread(target=self._events, daemon=True, name="watch-events")
        self.t_tel = threading.Thread(target=self._telemetry, daemon=True, name="watch-telemetry")
        self.t_events.start()
        self.t_tel.start()

    def _events(self) -> None:
        while not self.stop.is_set():
            ev = self.feed.get(0.2)
            if ev is None:
                continue
            if isinstance(ev, tuple):
                if not self.stop.is_set():
                    self.feed.start(self.feed.last_seq)
                continue
            self.kinds[pb.EventKind.Name(ev.kind)] += 1
            if ev.kind == pb.EVENT_KIND_CLOSED:
                self.closed[ev.session_id] = (time.monotonic(), ev.text)

    def _telemetry(self) -> None:
        while not self.stop.is_set():
            call = self.conn.stub.Telemetry(pb.TelemetryRequest(interval_ms=250), metadata=self.conn.md)
            try:
                for s in call:
                    self.samples += 1
                    for k in ("resident_kv_bytes", "swapped_kv_bytes", "host_pool_used_bytes", "clients_connected",
                              "open_streams", "accounted_bytes"):
                        v = getattr(s, k, 0)
                        if v > self.peaks[k]:
                            self.peaks[k] = v
                    self.peaks["sessions"] = max(self.peaks["sessions"], len(s.sessions))
                    if self.stop.is_set():
                        call.cancel()
                        return
            except grpc.RpcError:
                if not self.stop.is_set():
                    time.sleep(0.2)

    def close(self) -> None:
        self.stop.set()
        self.feed.drop()
        self.t_events.join(5)
        self.t_tel.join(5)
        self.conn.close()


def telemetry_sample(address: str, user: User | None, client_id: str = "load-check") -> pb.TelemetrySample:
    c = Conn(address, user.token if user else None, client_id)
    try:
        call = c.stub.Telemetry(pb.TelemetryRequest(interval_ms=50), metadata=c.md, timeout=30)
        s = next(call)
        call.cancel()
        return s
    finally:
        c.close()


def run_load(server: ServerProcess, users: list[User], cfg: LoadConfig, lease_s: float = 0.0,
             away: User | None = None, log=print) -> dict:
    """Runs the random load against `server`; returns the figures and every failed check.
    `away`: a user of its own for the abandoners (nobody else of that user touches their sessions,
    so the lease is measured cleanly)."""
    admin = next((u for u in users if u.admin), None)
    people = [u for u in users if not u.admin and u is not away] or users
    stats, reg = Stats(), Registry()
    problems: list[str] = []
    t_start = time.time()
    start_tel = telemetry_sample(server.address, admin)
    mem_start = dict(server_rss_bytes=server.rss_bytes(), host_pool_used_bytes=start_tel.host_pool_used_bytes,
                     resident_kv_bytes=start_tel.resident_kv_bytes, swapped_kv_bytes=start_tel.swapped_kv_bytes)
    watcher = Watcher(server.address, admin, stats)

    prompts = None
    if cfg.prompt_pool:
        pr = random.Random(cfg.seed + 1)
        prompts = [([pr.randrange(3, VOCAB) for _ in range(pr.randint(*cfg.prompt_len))], pr.randint(*cfg.max_new))
                   for _ in range(cfg.prompt_pool)]
    n_workers = cfg.clients_per_user * len(people)
    quotas = [cfg.sessions // n_workers + (1 if i < cfg.sessions % n_workers else 0) for i in range(n_workers)] \
        if cfg.sessions else [0] * n_workers
    deadline = time.monotonic() + cfg.seconds if cfg.seconds > 0 else 0.0
    workers = [ClientWorker(i, people[i % len(people)], users, server.address, cfg, stats, reg, quotas[i], deadline,
                            prompts) for i in range(n_workers)]
    abandoners = [Abandoner(i, away or people[i % len(people)], server.address, stats, reg)
                  for i in range(cfg.abandoners if lease_s > 0 else 0)]
    t0 = time.monotonic()
    ab_threads = [threading.Thread(target=a.run, daemon=True) for a in abandoners]
    for th in ab_threads:
        th.start()
    for w in workers:
        w.thread.start()
    next_log = time.monotonic() + 30
    timeline = []
    while any(w.thread.is_alive() for w in workers):
        for w in workers:
            w.thread.join(0.5)
        if not server.alive():
            problems.append(f"the server exited with {server.proc.returncode}")
            break
        if time.monotonic() >= next_log:
            next_log += 30
            done = sum(1 for t in list(reg.sessions.values()) if t.state in ("finished", "closed"))
            timeline.append(dict(t_s=round(time.monotonic() - t0, 1), server_rss_bytes=server.rss_bytes(),
                                 created=len(reg.sessions), done=done, unexpected=len(stats.unexpected),
                                 rpcs=sum(len(v) for v in stats.lat.values())))
            log(f"[load] {time.monotonic() - t0:.0f} s: {len(reg.sessions)} sessions created, {done} done, "
                f"{len(stats.unexpected)} unexpected, server RSS {server.rss_bytes() / 1e6:.0f} MB")
    for th in ab_threads:
        th.join(60)
    load_s = time.monotonic() - t0

    # abandoned sessions: closed by the lease, with a reason
    ab_ids = [i for a in abandoners for i in a.ids]
    if ab_ids:
        left = max(a.left_at for a in abandoners)
        end = max(left, time.monotonic()) + lease_s * 2 + 10
        while time.monotonic() < end and not all(i in watcher.closed for i in ab_ids):
            time.sleep(0.2)
        for i in ab_ids:
            if i not in watcher.closed:
                problems.append(f"abandoned session {i} was not closed {time.monotonic() - left:.1f} s after its "
                                f"client left (lease {lease_s} s)")
            else:
                at, text = watcher.closed[i]
                reg.sessions[i].state = "closed"
                if not text:
                    problems.append(f"abandoned session {i} closed without a reason in the CLOSED event's text")
                if at - left < lease_s * 0.9:
                    problems.append(f"abandoned session {i} closed {at - left:.1f} s after its client left, "
                                    f"before the lease of {lease_s} s")
    lease_closed = {i: round(watcher.closed[i][0] - max(a.left_at for a in abandoners), 2) for i in ab_ids
                    if i in watcher.closed}
    lease_texts = sorted({watcher.closed[i][1] for i in ab_ids if i in watcher.closed})

    # ownership of everything every user saw
    for user, where, ids in reg.seen:
        for i in ids:
            t = reg.sessions.get(i)
            if t is None:
                problems.append(f"{user} saw session {i} in {where}, which no load client created")
            elif cfg.check_owners and t.owner != user:
                problems.append(f"{user} saw session {i} of {t.owner} in {where}")
    # the sessions themselves
    log("[load] computing references in this process ...")
    refs = References()
    counts = Counter()
    lost = []
    checked: list[tuple[Tracked, dict]] = []
    for t in reg.sessions.values():
        counts["created"] += 1
        if t.lost or t.state == "lost":
            lost.append(f"session {t.id} ({t.client}): {t.lost}")
            counts["lost"] += 1
            continue
        if t.state == "abandoned":
            lost.append(f"abandoned session {t.id} was never closed")
            counts["lost"] += 1
            continue
        if t.state not in ("finished", "closed"):
            lost.append(f"session {t.id} ({t.client}) ended the run {t.state}")
            counts["lost"] += 1
            continue
        counts[t.state] += 1
        if t.written:
            counts["written"] += 1
        if t.state == "closed":
            counts["closed_early"] += 1
        if t.tokens is None and t.state == "finished":
            lost.append(f"session {t.id} finished without tokens")
            continue
        probes = {p: v for p, v in t.norms.items() if not t.written or _pos_key(p) <= _pos_key(t.first_write)}
        if probes or (t.state == "finished" and not t.written):
            checked.append((t, probes))
    # one uninterrupted run per (prompt, max_new), at the union of the points read
    want: dict = defaultdict(set)
    for t, probes in checked:
        want[(tuple(t.prompt), t.max_new)] |= set(probes)
    t_ref = time.monotonic()
    ref = {k: refs.run(list(k[0]), k[1], sorted(v)) for k, v in want.items()}
    counts["reference_runs"] = len(ref)
    ref_seconds = round(time.monotonic() - t_ref, 1)
    for t, probes in checked:
        ref_tokens, ref_norms = ref[(tuple(t.prompt), t.max_new)]
        for p, v in probes.items():
            counts["norms_checked"] += 1
            if ref_norms.get(p) != v:
                counts["norms_wrong"] += 1
                lost.append(f"session {t.id}: norm(hidden) at {p} is {v!r}, the uninterrupted run has {ref_norms.get(p)!r}")
        if t.state == "finished" and not t.written:
            counts["tokens_checked"] += 1
            if t.tokens != ref_tokens:
                counts["tokens_wrong"] += 1
                lost.append(f"session {t.id}: generated {t.tokens}, the uninterrupted run {ref_tokens}")
    counts["stops_seen"] = sum(t.stops for t in reg.sessions.values())

    # afterwards: nothing left, memory back where it started
    time.sleep(0.3)
    admin_conn = Conn(server.address, admin.token if admin else None, "load-check")
    st, resp, det = admin_conn.call("ListSessions", pb.ListSessionsRequest())
    left_over = [s.id for s in resp.sessions] if st == OK else None
    admin_conn.close()
    if st != OK:
        problems.append(f"admin ListSessions at the end: {st} {det}")
    elif left_over:
        problems.append(f"sessions left on the server after all were closed: {left_over[:20]}")
    end_tel = None
    for _ in range(50):
        end_tel = telemetry_sample(server.address, admin)
        if (end_tel.resident_kv_bytes == 0 and end_tel.swapped_kv_bytes == 0
                and end_tel.host_pool_used_bytes == start_tel.host_pool_used_bytes):
            break
        time.sleep(0.1)
    mem_end = dict(server_rss_bytes=server.rss_bytes(), host_pool_used_bytes=end_tel.host_pool_used_bytes,
                   resident_kv_bytes=end_tel.resident_kv_bytes, swapped_kv_bytes=end_tel.swapped_kv_bytes)
    if end_tel.resident_kv_bytes or end_tel.swapped_kv_bytes:
        problems.append(f"after all sessions closed: resident KV {end_tel.resident_kv_bytes} B, "
                        f"swapped KV {end_tel.swapped_kv_bytes} B")
    if end_tel.host_pool_used_bytes != start_tel.host_pool_used_bytes:
        problems.append(f"host pool used {end_tel.host_pool_used_bytes} B at the end, {start_tel.host_pool_used_bytes} "
                        f"B at the start")
    watcher.close()
    if not server.alive():
        problems.append(f"the server is gone (exit {server.proc.returncode})")
    for w in workers:
        if w.error is not None:
            problems.append(f"{w.client_id} crashed: {type(w.error).__name__}: {w.error}")

    return dict(
        started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)), load_seconds=round(load_s, 1),
        config=dict(cfg.__dict__, users=len(people), clients=n_workers, lease_s=lease_s),
        sessions=dict(counts), lost=lost, unexpected=list(stats.unexpected), problems=problems,
        statuses=stats.count_table(), latency_ms=stats.latency(), latency_ms_by_action=stats.latency(by_action=True),
        notes=dict(stats.notes),
        events_seen_by_admin=dict(watcher.kinds), telemetry_peaks=dict(watcher.peaks),
        telemetry_samples=watcher.samples, lease_closed_after_s=lease_closed, lease_close_texts=lease_texts,
        memory_start=mem_start, memory_end=mem_end, rpc_calls=sum(len(v) for v in stats.lat.values()),
        timeline=timeline, slow_calls=sorted(stats.slow), reference_seconds=ref_seconds,
        latency_table=stats.latency_table())


def failures(result: dict) -> list[str]:
    """Everything that must be empty for a run to pass."""
    return ([f"unexpected: {u}" for u in result["unexpected"]] + [f"lost: {x}" for x in result["lost"]]
            + [f"problem: {p}" for p in result["problems"]])
