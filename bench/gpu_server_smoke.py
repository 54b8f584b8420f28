"""Quick check of a running server on the GPU: sessions stop at 10/20/30, swap, finish identically."""
import sys
import time

import grpc

sys.path.insert(0, "server")
from djinn.v1 import djinn_pb2 as pb, djinn_pb2_grpc as pbg  # noqa: E402

addr, n = sys.argv[1], int(sys.argv[2])
stub = pbg.DjinnStub(grpc.insecure_channel(addr))
info = stub.GetInfo(pb.GetInfoRequest())
print("info", info.model.name, info.device_name, info.memory)
events = stub.Events(pb.EventsRequest())
ids = [stub.CreateSession(pb.CreateSessionRequest(prompt_tokens=[(i * 31 + j) % 31000 + 3 for j in range(2040)],
       max_new_tokens=3, context=2048, breakpoints=[pb.Breakpoint(id=l, layer=l) for l in (10, 20, 30)])).id for i in range(n)]
t0, done, stops = time.time(), {}, 0
for ev in events:
    if ev.kind == pb.EVENT_KIND_STOPPED:
        stops += 1
        stub.Continue(pb.SessionRef(session_id=ev.session_id))
    elif ev.kind in (pb.EVENT_KIND_SWAP_OUT, pb.EVENT_KIND_SWAP_IN):
        print(pb.EventKind.Name(ev.kind), ev.session_id, f"{ev.bytes/1e9:.2f} GB {ev.ms:.1f} ms {ev.gbps:.1f} GB/s")
    elif ev.kind == pb.EVENT_KIND_FINISHED:
        done[ev.session_id] = list(ev.session.generated_tokens)
        if len(done) == n:
            break
    elif ev.kind == pb.EVENT_KIND_ERROR:
        print("ERROR", ev.text)
        break
tel = next(stub.Telemetry(pb.TelemetryRequest()))
print(f"{n} sessions, {stops} stops in {time.time() - t0:.1f}s; peak accounted {tel.accounted_peak_bytes/1e9:.2f} GB, "
      f"nvml peak {tel.nvml_peak_bytes/1e9:.2f}, alloc peak {tel.allocator_peak_bytes/1e9:.2f}, budget {tel.budget_bytes/1e9:.1f}; "
      f"swaps {tel.swap_outs}/{tel.swap_ins}")
print("tokens", done)
