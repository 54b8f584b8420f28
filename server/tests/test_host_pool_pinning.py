"""The host pool pinned in the background: ready before it is done, reservations that wait for
the next chunk (bounded), progress in telemetry, a clean shutdown mid-pin. Slow pinning is
simulated on the CPU with an injected pin function; the real cudaHostRegister path is tested
where CUDA is available."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
import torch

from djinn.runtime.host_pool import ALIGN, HostPool, HostPoolFull, HostPoolTimeout
from djinn.server import state as state_mod
from djinn.v1 import djinn_pb2 as pb

from harness import running_server

CHUNK = 4 * ALIGN


class SlowPin:
    """A pin function that takes `delay` s per chunk, or waits for its chunk's gate; records
    when each chunk started and finished pinning, and what was unpinned."""

    def __init__(self, delay: float = 0.0, gated: int | None = None, fail_at: int | None = None):
        self.delay, self.fail_at = delay, fail_at
        self.gates = [threading.Event() for _ in range(64)]
        for g in self.gates[:gated if gated is not None else 64]:
            g.set()
        self.lock = threading.Lock()
        self.calls, self.log, self.unpinned = 0, [], []

    def open_all(self) -> None:
        for g in self.gates:
            g.set()

    def pin(self, nbytes: int) -> torch.Tensor:
        with self.lock:
            i, self.calls = self.calls, self.calls + 1
        t0 = time.monotonic()
        if i == self.fail_at:
            raise RuntimeError("CUDA error: out of memory (simulated)")
        self.gates[i].wait(30)
        time.sleep(self.delay)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        with self.lock:
            self.log.append((i, t0, time.monotonic(), buf.data_ptr()))
        return buf

    def unpin(self, buf: torch.Tensor) -> None:
        with self.lock:
            self.unpinned.append(buf.data_ptr())


def pool(slow: SlowPin, chunks: int = 6, **kw) -> HostPool:
    kw.setdefault("background", True)
    return HostPool(chunks * CHUNK, pin=False, chunk_bytes=CHUNK, pin_fn=slow.pin, unpin_fn=slow.unpin, **kw)


def test_a_foreground_pool_is_complete_when_constructed():
    p = HostPool(10 * ALIGN, pin=False, chunk_bytes=4 * ALIGN)
    assert not p.pinning and p.pinned_bytes == 10 * ALIGN and p.pin_seconds > 0 and p.error == ""
    assert all(b is not None for b in p.buffers)


def test_chunks_are_pinned_in_the_background_in_order_and_progress_goes_from_0_to_the_total():
    slow = SlowPin(delay=0.1)
    t0 = time.monotonic()
    p = pool(slow, chunks=6, threads=2)
    assert time.monotonic() - t0 < 0.09, "the constructor returned before the first chunk was pinned"
    assert p.pinning and p.pinned_bytes == 0 and p.pin_seconds == 0.0
    seen = [p.pinned_bytes]
    while p.pinning:
        seen.append(p.pinned_bytes)
        time.sleep(0.01)
    seen.append(p.pinned_bytes)
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 6 * CHUNK
    assert len(set(seen)) >= 4, f"progress was reported in steps: {sorted(set(seen))}"
    assert p.pin_seconds >= 0.3 and p.error == ""
    order = sorted(slow.log, key=lambda r: r[1])
    assert [r[0] for r in order] == list(range(6)), "chunks start in order"
    assert order[1][1] >= order[0][2], "chunk 0 is pinned alone, before the others start"
    p.close()


def test_a_reservation_beyond_the_pinned_part_waits_for_the_next_chunk_then_succeeds():
    slow = SlowPin(delay=0.15)
    p = pool(slow, chunks=4, threads=1)
    got = []
    for _ in range(3):
        off, size = p.reserve(CHUNK)              # one chunk each: the third needs chunk 2
        c = off // p.chunk
        assert p.buffers[c] is not None, "a region is only ever handed out in a pinned chunk"
        got.append((c, time.monotonic()))
    assert [c for c, _ in got] == [0, 1, 2]
    assert p.pinning, "chunk 3 is still being pinned"
    assert p.used == 3 * CHUNK
    p.view(2 * p.chunk, torch.float32, (CHUNK // 4,)).fill_(3)
    assert p.buffers[2].view(torch.float32).eq(3).all()
    p.close()


def test_the_wait_is_bounded_with_a_clear_error_and_a_later_try_succeeds():
    slow = SlowPin(gated=1)                       # chunk 0 pins at once, chunk 1 waits for its gate
    p = pool(slow, chunks=3, threads=1, wait_s=0.2)
    p.reserve(CHUNK)
    t = time.monotonic()
    with pytest.raises(HostPoolTimeout, match="still being pinned") as e:
        p.reserve(CHUNK)
    assert 0.15 <= time.monotonic() - t < 2
    assert isinstance(e.value, HostPoolFull) and "a session needs" in str(e.value) and "0.2 s" in str(e.value)
    t = time.monotonic()
    with pytest.raises(HostPoolFull, match="host pool full"):
        p.reserve(2 * CHUNK)                      # larger than any chunk: refused at once, no wait
    assert time.monotonic() - t < 0.1
    slow.gates[1].set()
    assert p.reserve(CHUNK)[0] == p.chunk
    slow.open_all()
    p.close()


def test_a_full_pinned_pool_still_refuses_at_once():
    p = pool(SlowPin(), chunks=2, background=False)
    p.reserve(CHUNK), p.reserve(CHUNK)
    t = time.monotonic()
    with pytest.raises(HostPoolFull, match="host pool full") as e:
        p.reserve(ALIGN)
    assert time.monotonic() - t < 0.1 and not isinstance(e.value, HostPoolTimeout)
    p.close()


def test_a_chunk_that_cannot_be_pinned_stops_pinning_with_the_reason():
    slow = SlowPin(fail_at=2)
    p = pool(slow, chunks=5, threads=1)
    assert p.wait_pinned(10)
    assert p.pinned_bytes == 2 * CHUNK and p.pin_seconds == 0.0 and "out of memory" in p.error
    p.reserve(CHUNK), p.reserve(CHUNK)
    with pytest.raises(HostPoolFull, match="could be pinned"):
        p.reserve(CHUNK)                          # no waiting for chunks that will never come
    p.close()
    assert sorted(slow.unpinned) == sorted(r[3] for r in slow.log)
    with pytest.raises(RuntimeError, match="cannot allocate the host pool"):
        pool(SlowPin(fail_at=1), chunks=3, background=False)


def test_shutdown_mid_pin_is_clean_and_unpins_everything_that_was_pinned():
    slow = SlowPin(delay=0.2)
    p = pool(slow, chunks=30, threads=4)
    time.sleep(0.3)                               # chunk 0 in, chunks 1-4 in flight
    waiter = {}

    def wait_for_room():
        try:
            p.reserve(25 * CHUNK)                 # can never fit a chunk... refused at once
        except HostPoolFull as e:
            waiter["full"] = str(e)
    t = threading.Thread(target=wait_for_room)
    t.start(), t.join(5)
    assert "host pool full" in waiter["full"]
    blocked = {}

    def blocked_reserve():                        # waits for a chunk when close() comes
        try:
            for _ in range(30):
                p.reserve(CHUNK)
        except HostPoolFull as e:
            blocked["err"] = str(e)
    b = threading.Thread(target=blocked_reserve)
    b.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    p.close()
    assert time.monotonic() - t0 < 1.0, "close waits only for the chunks in flight"
    b.join(5)
    assert not b.is_alive() and "closed" in blocked["err"]
    assert not any(th.is_alive() for th in [p._lead] + p._helpers)
    n = len(slow.log)
    assert 1 < n < 30, f"{n} chunks pinned before the shutdown stopped it"
    assert sorted(slow.unpinned) == sorted(r[3] for r in slow.log), "every pinned chunk was unpinned once"
    time.sleep(0.3)
    assert len(slow.log) == n and slow.calls == n, "nothing was pinned after close"
    assert all(x is None for x in p.buffers)
    with pytest.raises(HostPoolFull, match="closed"):
        p.reserve(ALIGN)
    p.close()                                     # twice: a no-op


def test_close_does_not_hang_on_a_stuck_pin_and_that_chunk_is_unpinned_when_it_returns():
    slow = SlowPin(gated=1)
    p = pool(slow, chunks=3, threads=1)
    while p.pinned_bytes < CHUNK:
        time.sleep(0.01)
    t0 = time.monotonic()
    p.close(timeout=0.2)
    assert time.monotonic() - t0 < 1.0
    assert len(slow.unpinned) == 1                # chunk 0; chunk 1 is still "registering"
    slow.gates[1].set()
    p._lead.join(5)
    assert not p._lead.is_alive()
    assert sorted(slow.unpinned) == sorted(r[3] for r in slow.log) and len(slow.log) == 2


def test_close_can_abandon_the_chunks():
    slow = SlowPin()
    p = pool(slow, chunks=2, background=False)
    p.close(unregister=False)
    assert slow.unpinned == []


# ------------------------------------------------------------------ the server
class _Pools:
    """Makes the server's pool a background one of `chunks` chunks, one 1024-token region each,
    pinned by `slow` on one thread."""

    def __init__(self, slow: SlowPin, chunks: int):
        self.slow, self.chunks, self.made = slow, chunks, []

    def __call__(self, nbytes, pin, chunk_bytes=None, **kw):
        kw.update(background=True, threads=1, pin_fn=self.slow.pin, unpin_fn=self.slow.unpin)
        p = HostPool(self.chunks * chunk_bytes, pin, chunk_bytes, **kw)
        self.made.append(p)
        return p


def _opts():
    return dict(plan_context=1024, max_context=1024, host_pool_chunk_gb=1e-6)


def test_the_server_is_ready_before_the_pool_is_pinned_and_sessions_wait_off_the_event_loop(monkeypatch):
    slow = SlowPin(gated=0)                       # nothing pins until the test opens the gates
    pools = _Pools(slow, chunks=3)
    monkeypatch.setattr(state_mod, "HostPool", pools)
    with running_server(**_opts()) as (c, st):
        p = st.pool
        assert p is pools.made[0] and p.pinning and p.pinned_bytes == 0
        info = c.GetInfo(pb.GetInfoRequest(), metadata=c.md)
        assert info.memory.host_pool_pinned_bytes == 0 and info.memory.host_pool_pin_seconds == 0
        t = st.telemetry_sample()
        assert t.host_pool_bytes == 3 * p.chunk and t.host_pool_pinned_bytes == 0 and t.host_pool_pin_seconds == 0
        assert "in the background (0.0 GB so far, 3 chunks)" in st.summary_line("x")
        made = {}

        def create():
            made["s"] = c.create([1, 2, 3], max_new=2, context=1024)
        th = threading.Thread(target=create)
        th.start()
        time.sleep(0.3)
        assert th.is_alive(), "the session waits for room in the pool"
        t0 = time.monotonic()
        assert c.GetInfo(pb.GetInfoRequest(), metadata=c.md).memory.host_pool_pinned_bytes == 0
        sample = c.stub.Telemetry(pb.TelemetryRequest(interval_ms=50), metadata=c.md)
        first = next(sample)
        sample.cancel()
        assert time.monotonic() - t0 < 2, "the event loop answers while a session waits for the pool"
        assert first.host_pool_pinned_bytes == 0
        progress = [first.host_pool_pinned_bytes]
        for i in range(3):
            slow.gates[i].set()
            if i == 0:
                th.join(10)
                assert not th.is_alive() and made["s"].id > 0
            deadline = time.monotonic() + 10
            while st.telemetry_sample().host_pool_pinned_bytes < (i + 1) * p.chunk and time.monotonic() < deadline:
                time.sleep(0.02)
            progress.append(st.telemetry_sample().host_pool_pinned_bytes)
        assert progress == [0, p.chunk, 2 * p.chunk, 3 * p.chunk]
        assert p.wait_pinned(10)
        done, info = st.telemetry_sample(), c.GetInfo(pb.GetInfoRequest(), metadata=c.md)
        assert done.host_pool_pin_seconds > 0 and done.host_pool_error == "" and done.host_pool_pinned_bytes == 3 * p.chunk
        assert info.memory.host_pool_pinned_bytes == 3 * p.chunk and info.memory.host_pool_pin_seconds > 0
        c.wait(pb.EVENT_KIND_FINISHED, made["s"].id)
    assert p.buffers == [None] * 3 and sorted(slow.unpinned) == sorted(r[3] for r in slow.log)


def test_a_session_that_waits_too_long_for_the_pool_gets_resource_exhausted(monkeypatch):
    slow = SlowPin(gated=1)                       # chunk 0 pins, chunk 1 hangs
    monkeypatch.setattr(state_mod, "HostPool", _Pools(slow, chunks=2))
    with running_server(host_pool_wait_s=0.3, **_opts()) as (c, st):
        s = c.create([1, 2, 3], max_new=2, context=1024, layers=(2,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)          # paused: it holds its region (chunk 0)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            c.create([1, 2, 3], max_new=2, context=1024)
        assert 0.25 < time.monotonic() - t0 < 5
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "still being pinned" in e.value.details(), e.value.details()
        slow.gates[1].set()
        assert st.pool.wait_pinned(10)
        s2 = c.create([1, 2, 3], max_new=2, context=1024)
        c.wait(pb.EVENT_KIND_FINISHED, s2.id)
        c.CloseSession(pb.SessionRef(session_id=s.id))
        assert st.pool.used == 0


# ------------------------------------------------------------------ CUDA: real cudaHostRegister
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_pool_pins_in_the_background_and_swaps_copy_asynchronously():
    p = HostPool(256 << 20, pin=True, chunk_bytes=64 << 20, background=True)
    assert p.wait_pinned(120) and p.error == "" and p.pinned_bytes == 256 << 20 and p.pin_seconds > 0
    assert all(b.is_pinned() for b in p.buffers)
    off, _ = p.reserve(32 << 20)
    src = torch.arange(8 << 20, dtype=torch.float32, device="cuda")
    dst = p.view(off, torch.float32, (8 << 20,))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        dst.copy_(src, non_blocking=True)
    s.synchronize()
    assert torch.equal(dst, src.cpu())
    bufs = list(p.buffers)
    p.close()
    assert not p._registered and not any(b.is_pinned() for b in bufs), "every chunk was unregistered"


@cuda
def test_cuda_close_while_pinning_is_clean():
    p = HostPool(4 << 30, pin=True, chunk_bytes=256 << 20, background=True)
    time.sleep(0.2)
    t0 = time.monotonic()
    p.close(timeout=30)
    assert time.monotonic() - t0 < 30
    assert not any(t.is_alive() for t in [p._lead] + p._helpers)
    assert not p._registered, "every registered chunk was unregistered"
    torch.cuda.synchronize()
