"""GPU checks of the shared-server guarantees, against a real server process on CUDA.

Hostile input from one user (out-of-range integer-tensor indices, huge powers, bad slices,
positions, conditions) must give specific statuses and leave the device healthy: another
user's session keeps running and its output equals its reference. Then a real device fault
is injected (--test-fault-injection): the server must fail every session with the reason,
say so once, refuse GPU work with UNAVAILABLE and exit with code 3.

    python3 bench/gpu_safety.py [--model llama-2-13b] [--out DIR]    (writes DIR/gpu-safety.json)

Run on the device whenever the runtime, the scheduler or the expression language changes.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "..", "server")
sys.path.insert(0, SERVER)

import grpc  # noqa: E402

from djinn.v1 import djinn_pb2 as pb  # noqa: E402
from djinn.v1 import djinn_pb2_grpc as pb_grpc  # noqa: E402

TOKENS = {"alice": "alice-token-1", "bob": "bob-token-22"}


class User:
    def __init__(self, address, name):
        self.stub = pb_grpc.DjinnStub(grpc.insecure_channel(address))
        self.md = [("x-djinn-token", TOKENS[name]), ("x-djinn-client", f"{name}-bench")]
        self.events: queue.Queue = queue.Queue()
        self.stream = self.stub.Events(pb.EventsRequest(), metadata=self.md)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for ev in self.stream:
                self.events.put(ev)
        except grpc.RpcError:
            pass

    def call(self, name, req, timeout=120):
        return getattr(self.stub, name)(req, metadata=self.md, timeout=timeout)

    def wait(self, kinds, sid=None, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            try:
                ev = self.events.get(timeout=1)
            except queue.Empty:
                continue
            if ev.kind in kinds and (sid is None or ev.session_id == sid):
                return ev
        raise TimeoutError(f"no {kinds} for {sid}")


def status_of(fn):
    t0 = time.perf_counter()
    try:
        r = fn()
        if hasattr(r, "__iter__") and not hasattr(r, "ByteSize"):
            list(r)
        return "OK", "", (time.perf_counter() - t0) * 1e3
    except grpc.RpcError as e:
        return e.code().name, e.details(), (time.perf_counter() - t0) * 1e3


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--device", default="auto")
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--new", type=int, default=4)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    a = p.parse_args()
    tokens = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    tokens.write("".join(f"{u} {t}\n" for u, t in TOKENS.items()))
    tokens.close()
    cmd = [sys.executable, "-m", "djinn.server.server_main", "--model", a.model, "--device", a.device, "--port", "0",
           "--host-pool-gb", "4", "--max-context", "1024", "--tokens-file", tokens.name, "--test-fault-injection"]
    t_start = time.time()
    proc = subprocess.Popen(cmd, cwd=SERVER, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SERVER})
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    line = ""
    while not line.startswith("DJINN_READY"):
        line = proc.stdout.readline()
        if not line:
            print("server did not start:\n" + "".join(stderr[-40:]))
            return 2
    ready = json.loads(line.split(" ", 1)[1])
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    alice, bob = User(ready["address"], "alice"), User(ready["address"], "bob")
    prompt = [3 + (i * 37) % 31000 for i in range(a.prompt)]
    info = alice.call("GetInfo", pb.GetInfoRequest())
    vocab = info.model.vocab_size
    prompt = [t % vocab for t in prompt]
    # bob's reference: an uninterrupted run before anything hostile happens
    ref = bob.call("CreateSession", pb.CreateSessionRequest(prompt_tokens=prompt, max_new_tokens=a.new))
    ref_tokens = list(bob.wait([pb.EVENT_KIND_FINISHED], ref.id).session.generated_tokens)

    s = alice.call("CreateSession", pb.CreateSessionRequest(prompt_tokens=prompt, max_new_tokens=a.new,
                                                            breakpoints=[pb.Breakpoint(id=1, layer=20)]))
    alice.wait([pb.EVENT_KIND_STOPPED], s.id)
    sid = s.id
    ev = lambda e: lambda: alice.call("Evaluate", pb.EvaluateRequest(session_id=sid, expression=e))  # noqa: E731
    cases = {
        "hidden[tokens]": ev("hidden[tokens]"),
        "hidden[tokens * 1000]": ev("hidden[tokens * 1000]"),
        "hidden[0, tokens]": ev("hidden[0, tokens]"),
        "hidden[-100000]": ev("hidden[-100000]"),
        "k_cache[0, tokens]": ev("k_cache[0, tokens]"),
        "2 ** 2048": ev("2 ** 2048"),
        "10 ** 400 literal": ev("1" + "0" * 400),
        "topk(hidden, 100000)": ev("topk(hidden, 100000)"),
        "softmax(hidden, dim=7)": ev("softmax(hidden, dim=7)"),
        "logits[tokens] (a 2-D gather past the rows)": ev("logits[tokens]"),
        "GetTensor slice out of range": lambda: alice.call("GetTensor", pb.GetTensorRequest(
            session_id=sid, name="hidden", slice=[pb.DimSlice(start=10**9, stop=10**9 + 1)])),
        "SetTensor slice out of range": lambda: alice.call("SetTensor", pb.SetTensorRequest(
            session_id=sid, name="hidden", slice=[pb.DimSlice(start=-10**9)], has_scalar=True, scalar=1.0)),
        "LogitLens position 10**6": lambda: alice.call("LogitLens", pb.LogitLensRequest(session_id=sid, position=10**6)),
        "bob reads alice's session": lambda: bob.call("Evaluate", pb.EvaluateRequest(session_id=sid, expression="1")),
    }
    results = []
    for name, fn in cases.items():
        code, msg, ms = status_of(fn)
        results.append(dict(case=name, status=code, message=msg[:300], ms=round(ms, 2)))
        print(f"{name:45s} {code:20s} {msg[:120]}")
    # a breakpoint condition with an out-of-range index: a condition error stop, not a device assert
    alice.call("SetBreakpoints", pb.SetBreakpointsRequest(session_id=sid, breakpoints=[
        pb.Breakpoint(id=2, layer=30, condition="sum(hidden[tokens]) > 0")]))
    alice.call("Continue", pb.SessionRef(session_id=sid))
    stop = alice.wait([pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_ERROR], sid)
    results.append(dict(case="condition sum(hidden[tokens]) > 0", status=pb.EventKind.Name(stop.kind),
                        message=stop.text[:300]))
    print(f"{'condition sum(hidden[tokens]) > 0':45s} {pb.EventKind.Name(stop.kind):20s} {stop.text[:120]}")
    healthy = alice.call("Evaluate", pb.EvaluateRequest(session_id=sid, expression="norm(hidden)")).value
    # bob, meanwhile, is unharmed
    b = bob.call("CreateSession", pb.CreateSessionRequest(prompt_tokens=prompt, max_new_tokens=a.new))
    b_tokens = list(bob.wait([pb.EVENT_KIND_FINISHED], b.id).session.generated_tokens)

    # a real device fault
    t0 = time.time()
    code, msg, _ = status_of(ev("__device_fault__"))
    errs = alice.wait([pb.EVENT_KIND_ERROR], sid, timeout=60)      # each session's error comes first
    failed = alice.wait([pb.EVENT_KIND_DEVICE_FAILED], 0, timeout=30)
    after, after_msg, _ = status_of(lambda: bob.call("CreateSession", pb.CreateSessionRequest(prompt_tokens=[5],
                                                                                             max_new_tokens=1)))
    try:
        rc = proc.wait(60)
    except subprocess.TimeoutExpired:
        rc = None
        proc.kill()
    exit_s = time.time() - t0
    out = dict(
        command=" ".join([sys.executable] + sys.argv), server_command=" ".join(cmd), commit=_commit(),
        date=time.strftime("%Y-%m-%d"), device=ready.get("device_name"), model=a.model, server_ready_s=ready.get("startup_seconds"),
        hostile_cases=results, device_healthy_after_hostile_input=bool(healthy), healthy_value=healthy,
        other_user_output_equals_reference=b_tokens == ref_tokens,
        fault=dict(evaluate_status=code, evaluate_message=msg[:300], device_failed_event=failed.text[:400],
                   session_error=errs.text[:300], new_work_status=after, new_work_message=after_msg[:300],
                   exit_code=rc, seconds_to_exit=round(exit_s, 2)),
        unknown_statuses=sum(1 for r in results if r["status"] in ("UNKNOWN", "INTERNAL")),
        total_s=round(time.time() - t_start, 1))
    ok = (out["unknown_statuses"] == 0 and out["other_user_output_equals_reference"] and rc == 3
          and code == "UNAVAILABLE" and after == "UNAVAILABLE")
    out["all_passed"] = ok
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gpu-safety.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out["fault"], indent=2), "\nall passed:", ok)
    return 0 if ok else 1


def _commit() -> str:
    from perf_common import code_commit
    return code_commit()


if __name__ == "__main__":
    sys.exit(main())
