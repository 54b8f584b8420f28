"""Steering smollm2-135m through a running Djinn server: add a "happy minus sad" direction to the
residual stream entering layers.10 and watch the text change (docs/models.md).

    PYTHONPATH=server .venv/bin/python -m djinn.server.server_main --model smollm2-135m --device cpu &
    PYTHONPATH=server .venv/bin/python docs/examples/steering.py 127.0.0.1:5556

server/tests/test_smollm2.py runs these same functions against a real server.
"""
from __future__ import annotations

import queue
import sys
import threading

import grpc
import numpy as np

from djinn.v1 import djinn_pb2 as pb
from djinn.v1 import djinn_pb2_grpc as pb_grpc

LAYER = 10
HAPPY, SAD = "I feel happy", "I feel sad"
PROMPT = "I went to the park and saw"


def decode(data: bytes, dtype: str) -> np.ndarray:
    """A tensor's bytes (as GetTensor sends them) as float32."""
    if dtype == "bfloat16":  # numpy has no bfloat16: it is the top half of a float32
        return (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, np.dtype(dtype)).astype(np.float32)


def encode(a: np.ndarray, dtype: str) -> bytes:
    """float32 values as bytes of the server's dtype (SetTensor wants the tensor's own)."""
    if dtype == "bfloat16":
        return (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return np.ascontiguousarray(a, np.dtype(dtype)).tobytes()


class Events:
    """The server's event stream, read in a thread, filtered by session and kind."""

    def __init__(self, stub):
        self._q: queue.Queue = queue.Queue()
        self._stream = stub.Events(pb.EventsRequest())
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for ev in self._stream:
                self._q.put(ev)
        except grpc.RpcError:
            pass

    def next(self, session_id: int, kinds, timeout: float = 120):
        while True:
            ev = self._q.get(timeout=timeout)
            if ev.session_id == session_id and ev.kind in kinds:
                return ev


def residual_at(stub, events: Events, prompt: str, layer: int = LAYER) -> np.ndarray:
    """The residual stream entering `layer` at the prompt's last token: [dim] float32."""
    s = stub.CreateSession(pb.CreateSessionRequest(prompt=prompt, max_new_tokens=1,
                                                   breakpoints=[pb.Breakpoint(id=1, layer=layer)]))
    ev = events.next(s.id, (pb.EVENT_KIND_STOPPED,))
    n = ev.session.position.num_tokens
    chunks = list(stub.GetTensor(pb.GetTensorRequest(session_id=s.id, name="hidden",
                                                     slice=[pb.DimSlice(start=n - 1, stop=n, step=1)])))
    stub.CloseSession(pb.SessionRef(session_id=s.id))
    return decode(b"".join(ch.data for ch in chunks), chunks[0].dtype)


def generate_steered(stub, events: Events, prompt: str, direction: np.ndarray | None,
                     layer: int = LAYER, new: int = 12) -> str:
    """Greedy text with `direction` added to every row of the residual stream entering `layer`,
    in every forward pass (the prompt's, then each new token's); None: no steering."""
    bps = [pb.Breakpoint(id=1, layer=layer)] if direction is not None else []
    dtype = stub.GetInfo(pb.GetInfoRequest()).dtype
    s = stub.CreateSession(pb.CreateSessionRequest(prompt=prompt, max_new_tokens=new, breakpoints=bps))
    while True:
        ev = events.next(s.id, (pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR))
        if ev.kind == pb.EVENT_KIND_ERROR:
            raise RuntimeError(ev.text)
        if ev.kind == pb.EVENT_KIND_FINISHED:
            return ev.session.generated_text
        add = np.tile(direction, (ev.session.position.num_tokens, 1))
        stub.SetTensor(pb.SetTensorRequest(session_id=s.id, name="hidden", mode=pb.WRITE_MODE_ADD,
                                           dtype=dtype, shape=list(add.shape), data=encode(add, dtype)))
        stub.Continue(pb.SessionRef(session_id=s.id))


def main(address: str) -> None:
    stub = pb_grpc.DjinnStub(grpc.insecure_channel(address))
    events = Events(stub)
    happy = residual_at(stub, events, HAPPY) - residual_at(stub, events, SAD)
    print(f"{PROMPT!r}")
    print("  plain: ", repr(generate_steered(stub, events, PROMPT, None)))
    print("  +happy:", repr(generate_steered(stub, events, PROMPT, happy)))
    print("  -happy:", repr(generate_steered(stub, events, PROMPT, -happy)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:5556")
