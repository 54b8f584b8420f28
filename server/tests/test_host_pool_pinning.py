"""The host pool pinned in the background: ready before it is done, reservations that never wait
(the first copy into a chunk not pinned yet does, bounded), progress in telemetry, plain memory
for chunks that could not be pinned, a clean shutdown mid-pin. Slow pinning is
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


def test_a_reservation_never_waits_for_pinning_and_the_first_copy_into_its_chunk_does():
    slow = SlowPin(gated=1)                       # chunk 0 pins at once, chunk 1 waits for its gate
    p = pool(slow, chunks=3, threads=1)
    while p.pinned_bytes < CHUNK:
        time.sleep(0.01)
    t = time.monotonic()
    regions = [p.reserve(CHUNK) for _ in range(3)]
    assert time.monotonic() - t < 0.1, "reservations do not wait for pinning"
    assert [off // p.chunk for off, _ in regions] == [0, 1, 2], "pinned chunks first, then in pinning order"
    assert p.used == 3 * CHUNK
    got = {}
    th = threading.Thread(target=lambda: got.setdefault("v", p.view(regions[1][0], torch.float32, (CHUNK // 4,))))
    th.start()
    time.sleep(0.2)
    assert th.is_alive(), "the first copy into chunk 1 waits for its pinning"
    slow.gates[1].set()
    th.join(5)
    assert not th.is_alive() and got["v"].data_ptr() == p.buffers[1].data_ptr()
    got["v"].fill_(3)
    assert p.buffers[1].view(torch.float32).eq(3).all()
    slow.open_all()
    p.close()


def test_the_wait_of_a_copy_is_bounded_with_a_clear_error_and_a_full_pool_refuses_at_once():
    slow = SlowPin(gated=1)                       # chunk 0 pins at once, chunk 1 waits for its gate
    p = pool(slow, chunks=3, threads=1, wait_s=0.2)
    while p.pinned_bytes < CHUNK:
        time.sleep(0.01)
    p.reserve(CHUNK)
    off = p.reserve(CHUNK)[0]                     # in chunk 1
    t = time.monotonic()
    with pytest.raises(HostPoolTimeout, match="still being pinned") as e:
        p.view(off, torch.uint8, (CHUNK,))
    assert 0.15 <= time.monotonic() - t < 2
    assert isinstance(e.value, HostPoolFull) and "0.2 s" in str(e.value)
    t = time.monotonic()
    with pytest.raises(HostPoolFull, match="host pool full"):
        p.reserve(2 * CHUNK)                      # larger than any chunk: refused at once
    assert time.monotonic() - t < 0.1
    slow.gates[1].set()
    assert p.view(off, torch.uint8, (CHUNK,)).numel() == CHUNK
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


def test_a_chunk_that_cannot_be_pinned_stops_pinning_and_the_rest_is_plain_memory():
    slow = SlowPin(fail_at=2)
    p = pool(slow, chunks=5, threads=1)
    assert p.wait_pinned(10)
    assert p.pinned_bytes == 2 * CHUNK and p.pin_seconds == 0.0 and "out of memory" in p.error
    regions = [p.reserve(CHUNK) for _ in range(5)]   # every session can still leave the device
    with pytest.raises(HostPoolFull, match="could be pinned"):
        p.reserve(CHUNK)
    t = time.monotonic()
    v = p.view(regions[3][0], torch.uint8, (CHUNK,))  # chunk 3: never pinned, plain memory at once
    assert time.monotonic() - t < 0.5
    v.fill_(1)
    assert p.fallback_bytes == CHUNK and p.pinned_bytes == 2 * CHUNK
    p.close()
    assert sorted(slow.unpinned) == sorted(r[3] for r in slow.log), "only the pinned chunks are unpinned"
    with pytest.raises(RuntimeError, match="cannot allocate the host pool"):
        pool(SlowPin(fail_at=1), chunks=3, background=False)


def test_shutdown_mid_pin_is_clean_and_unpins_everything_that_was_pinned():
    slow = SlowPin(delay=0.2)
    p = pool(slow, chunks=30, threads=4)
    time.sleep(0.3)                               # chunk 0 in, chunks 1-4 in flight
    waiter = {}

    def wait_for_room():
        try:
            p.reserve(25 * CHUNK)                 # can never fit a chunk: refused at once
        except HostPoolFull as e:
            waiter["full"] = str(e)
    t = threading.Thread(target=wait_for_room)
    t.start(), t.join(5)
    assert "host pool full" in waiter["full"]
    regions = [p.reserve(CHUNK) for _ in range(30)]   # reservations never wait
    blocked = {}

    def blocked_view():                           # a copy into the last chunk waits when close() comes
        try:
            p.view(regions[-1][0], torch.uint8, (CHUNK,))
        except HostPoolFull as e:
            blocked["err"] = str(e)
    b = threading.Thread(target=blocked_view)
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


def test_the_server_is_ready_before_the_pool_is_pinned_and_sessions_are_created_at_once(monkeypatch):
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
        th.join(10)
        assert not th.is_alive() and made["s"].id > 0, "a session is created before any chunk is pinned"
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


def test_a_swap_out_into_a_chunk_not_pinned_yet_waits_for_it(monkeypatch):
    slow = SlowPin(gated=1)                       # chunk 0 pins, chunk 1 waits for its gate
    monkeypatch.setattr(state_mod, "HostPool", _Pools(slow, chunks=2))
    with running_server(host_pool_wait_s=20, swap_policy="eager", **_opts()) as (c, st):
        s = c.create([1, 2, 3], max_new=1, context=1024, layers=(2,))
        c.wait(pb.EVENT_KIND_STOPPED, s.id)
        c.wait(pb.EVENT_KIND_SWAP_OUT, s.id)          # eager: off the device, into chunk 0
        t0 = time.monotonic()
        s2 = c.create([4, 5, 6], max_new=1, context=1024, layers=(2,))
        assert time.monotonic() - t0 < 2, "created at once: its region is in chunk 1, still being pinned"
        c.wait(pb.EVENT_KIND_STOPPED, s2.id)
        time.sleep(0.3)
        assert st.pool.buffers[1] is None and info_kv(c, s2.id) != pb.KV_LOCATION_HOST, "its copy waits for chunk 1"
        slow.gates[1].set()
        c.wait(pb.EVENT_KIND_SWAP_OUT, s2.id)
        for sid in (s.id, s2.id):
            c.Continue(pb.SessionRef(session_id=sid))
        for sid in (s.id, s2.id):
            c.wait(pb.EVENT_KIND_FINISHED, sid)
        assert st.pool.used == 0


def test_a_session_whose_chunk_is_not_pinned_yet_is_not_evicted_and_nobody_else_stalls(monkeypatch):
    """Room for one session: A (chunk 0) makes way for B (chunk 1, not pinned yet); C then waits
    for room, since B cannot leave until chunk 1 is in, while the worker keeps serving."""
    slow = SlowPin(gated=1)                       # chunk 0 pins; chunks 1 and 2 wait for their gates
    monkeypatch.setattr(state_mod, "HostPool", _Pools(slow, chunks=3))
    with running_server(budget="auto:0.1", plan_sessions=10, **_opts()) as (c, st):
        a = c.create([1, 2, 3], max_new=1, context=1024, layers=(2,))
        c.wait(pb.EVENT_KIND_STOPPED, a.id)
        b = c.create([4, 5, 6], max_new=1, context=1024, layers=(2,))
        c.wait(pb.EVENT_KIND_SWAP_OUT, a.id)          # A's chunk 0 is pinned: it leaves for B
        c.wait(pb.EVENT_KIND_STOPPED, b.id)
        cc = c.create([7, 8, 9], max_new=1, context=1024, layers=(2,))
        time.sleep(0.5)
        assert info_kv(c, b.id) == pb.KV_LOCATION_DEVICE, "B's region is in chunk 1, not pinned: B stays"
        assert c.GetSession(pb.SessionRef(session_id=cc.id)).state == pb.SESSION_STATE_RUNNING
        assert st.scheduler.submit(lambda: 7).result(timeout=2) == 7, "the worker is not held by a copy into an unpinned chunk"
        slow.gates[1].set()
        c.wait(pb.EVENT_KIND_SWAP_OUT, b.id)          # chunk 1 in: B leaves, C runs
        c.wait(pb.EVENT_KIND_STOPPED, cc.id)
        slow.open_all()
        for sid in (a.id, b.id, cc.id):
            c.Continue(pb.SessionRef(session_id=sid))
        for sid in (a.id, b.id, cc.id):
            c.wait(pb.EVENT_KIND_FINISHED, sid)
        assert st.ledger.peak <= st.ledger.budget


def info_kv(c, sid):
    return c.GetSession(pb.SessionRef(session_id=sid)).kv_location


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


def test_chunk_memory_is_zeroed_writable_and_of_its_size():
    """The chunks' plain memory (an anonymous mmap, huge pages where the kernel has them)."""
    from djinn.runtime.host_pool import _huge_page_memory

    t, backing = _huge_page_memory(3 * 4096 + 5)
    assert t.dtype == torch.uint8 and t.numel() == 3 * 4096 + 5 and int(t.sum()) == 0
    t[-1] = 7
    assert int(t[-1]) == 7
