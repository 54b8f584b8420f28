"""A real Djinn gRPC server on a free loopback port, in this process, plus helpers."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from contextlib import contextmanager

import grpc

from djinn.server.auth import AuthInterceptor
from djinn.server.server_main import grpc_options
from djinn.server.service import DjinnService, add_to_server
from djinn.server.state import Options, ServerState
from djinn.v1 import djinn_pb2 as pb
from djinn.v1 import djinn_pb2_grpc as pb_grpc


class InProcessServer:
    """The real asyncio gRPC server of server_main, on its own loop in a thread."""

    def __init__(self, state: ServerState, max_request_mb: float = 64, credentials=None):
        self.state, self.port = state, 0
        self._ready, self._loop, self._stop = threading.Event(), None, None
        self._args = (max_request_mb, credentials)
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name="djinn-aio")
        self.thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("in-process server did not start")

    async def _main(self):
        mb, creds = self._args
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = grpc.aio.server(interceptors=[AuthInterceptor(self.state.users)], options=grpc_options(mb))
        add_to_server(DjinnService(self.state, self._loop), server)
        self.port = (server.add_secure_port("127.0.0.1:0", creds) if creds else server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.state.stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


def metadata(token: str = "", client: str = "") -> list:
    md = []
    if token:
        md.append(("x-djinn-token", token))
    if client:
        md.append(("x-djinn-client", client))
    return md


@contextmanager
def running_server(**kw):
    opts = Options(**{"model": "tiny-40l", "device": "cpu", "budget": "8", **kw})
    state = ServerState(opts)
    srv = InProcessServer(state)
    state.address = srv.address
    channel = grpc.insecure_channel(srv.address)
    try:
        yield Client(pb_grpc.DjinnStub(channel)), state
    finally:
        channel.close()
        srv.stop()
        state.shutdown()


class Client:
    """The stub plus an event collector, so tests read like a script. With token/client, every
    call carries them as metadata (x-djinn-token, x-djinn-client)."""

    def __init__(self, stub, token: str = "", client: str = "", since_seq: int = 0):
        self.stub, self.md = stub, metadata(token, client)
        self.events: queue.Queue = queue.Queue()
        self.backlog: list = []
        self._stream = stub.Events(pb.EventsRequest(since_seq=since_seq), metadata=self.md)
        threading.Thread(target=self._pump, daemon=True).start()
        time.sleep(0.05)

    @classmethod
    def connect(cls, address: str, token: str = "", client: str = "", since_seq: int = 0) -> "Client":
        return cls(pb_grpc.DjinnStub(grpc.insecure_channel(address)), token, client, since_seq)

    def drop(self):
        """Ends this client's event stream (as a dropped connection would)."""
        self._stream.cancel()

    def _pump(self):
        try:
            for ev in self._stream:
                self.events.put(ev)
        except grpc.RpcError:
            pass

    def __getattr__(self, name):
        fn = getattr(self.stub, name)
        if not self.md:
            return fn

        def call(request, **kw):
            kw.setdefault("metadata", self.md)
            return fn(request, **kw)
        return call

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
        return self.CreateSession(pb.CreateSessionRequest(prompt_tokens=tokens, max_new_tokens=max_new,
                                                               breakpoints=bps, **kw))
