"""A real Djinn gRPC server on a free loopback port, in this process, plus helpers."""
from __future__ import annotations

import queue
import threading
import time
from concurrent import futures
from contextlib import contextmanager

import grpc

from djinn.server.service import DjinnService
from djinn.server.state import Options, ServerState
from djinn.v1 import djinn_pb2 as pb
from djinn.v1 import djinn_pb2_grpc as pb_grpc


@contextmanager
def running_server(**kw):
    opts = Options(**{"model": "tiny-40l", "device": "cpu", "budget": "8", **kw})
    state = ServerState(opts)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    pb_grpc.add_DjinnServicer_to_server(DjinnService(state), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Client(pb_grpc.DjinnStub(channel)), state
    finally:
        state.stopping = True
        channel.close()
        server.stop(0).wait()
        state.shutdown()


class Client:
    """The stub plus an event collector, so tests read like a script."""

    def __init__(self, stub):
        self.stub = stub
        self.events: queue.Queue = queue.Queue()
        self.backlog: list = []
        self._stream = stub.Events(pb.EventsRequest())
        threading.Thread(target=self._pump, daemon=True).start()
        time.sleep(0.05)

    def _pump(self):
        try:
            for ev in self._stream:
                self.events.put(ev)
        except grpc.RpcError:
            pass

    def __getattr__(self, name):
        return getattr(self.stub, name)

    def wait(self, kind, session_id=None, timeout=60.0, pred=lambda e: True):
        """Next event of this kind (for this session), in order; events that do not match
        are kept for later waits, so no test misses an event another wait read first."""
        match = lambda e: (kind is None or e.kind == kind) and (session_id is None or e.session_id == session_id) and pred(e)
        for i, ev in enumerate(self.backlog):
            if match(ev):
                return self.backlog.pop(i)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {pb.EventKind.Name(kind) if kind else 'matching'} event for session {session_id}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if match(ev):
                return ev
            self.backlog.append(ev)

    def wait_any(self, kinds, session_id=None, timeout=60.0):
        return self.wait(None, session_id, timeout, pred=lambda e: e.kind in kinds)

    def create(self, tokens, max_new=3, layers=(), **kw):
        bps = [pb.Breakpoint(id=l, layer=l) for l in layers]
        return self.stub.CreateSession(pb.CreateSessionRequest(prompt_tokens=tokens, max_new_tokens=max_new,
                                                               breakpoints=bps, **kw))
