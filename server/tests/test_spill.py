"""The disk tier: with the host pool full, the coldest swapped session moves to a spill file on
local disk; it comes back through the pool; every session finishes with its reference; admission
counts the three tiers; the file is gone once the server ends."""
import os
import random

import grpc
import pytest
import torch

from djinn.runtime.spill import SpillFile
from djinn.v1 import djinn_pb2 as pb
from harness import running_server

CTX = 32
REGION = (40 * 2 * 2 * CTX * 32 + 4 * CTX * 128) * 4          # tiny-40l KV + activations, fp32


def prompt(seed, n=24):
    r = random.Random(seed)
    return [r.randrange(3, 500) for _ in range(n)]


def test_a_region_goes_to_disk_and_back_bit_for_bit(tmp_path):
    f = SpillFile(str(tmp_path), 3 * (1 << 20), threads=2)
    try:
        assert os.listdir(tmp_path) == [], "the file is unlinked at once"
        src = torch.randint(0, 256, (1 << 20,), dtype=torch.uint8)
        off, size = f.reserve(src.numel())
        f.finished(f.write(src, off))
        back = torch.zeros_like(src)
        sec = f.finished(f.read(back, off))
        assert torch.equal(src, back) and sec > 0
        assert f.totals["out"][:2] == [1, 1 << 20] and f.totals["in"][:2] == [1, 1 << 20]
        assert f.gb_per_s("out") > 0 and f.gb_per_s("in") > 0
        odd = torch.arange(5000, dtype=torch.int32).view(torch.uint8)   # not a multiple of 4096: buffered I/O
        off2, _ = f.reserve(odd.numel())
        f.finished(f.write(odd, off2))
        back2 = torch.zeros_like(odd)
        f.finished(f.read(back2, off2))
        assert torch.equal(odd, back2)
        assert f.reserve(2 << 20) is None, "full: no region"
        f.release(off, size)
        assert f.reserve(size) is not None
    finally:
        f.close()


def test_the_disk_counts_only_with_a_pool_of_two_sessions(tmp_path):
    with running_server(budget="auto:1", plan_sessions=1, plan_context=CTX, host_pool_gb=REGION / 1e9,
                        spill_dir=str(tmp_path), spill_gb=4 * REGION / 1e9) as (c, st):
        c.create(prompt(1), max_new=2, layers=(5,), context=CTX)
        with pytest.raises(grpc.RpcError) as e:   # device 1 + pool 1, less one: the disk does not count
            c.create(prompt(2), max_new=2, layers=(5,), context=CTX)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sessions_spill_to_disk_come_back_and_finish_right(tmp_path):
    """2 regions on the device, 2 in the pool, 2 in the spill file: 5 sessions admitted (less one's
    room), paused at every 10th layer and continued; sessions pass through the disk."""
    with running_server(budget="auto:2", plan_sessions=1, plan_context=CTX, host_pool_gb=2 * REGION / 1e9,
                        swap_policy="eager", spill_dir=str(tmp_path), spill_gb=2 * REGION / 1e9) as (c, st):
        assert st.spill is not None and st.spill.capacity(REGION) >= 2 * REGION
        info = c.stub.GetInfo(pb.GetInfoRequest())
        assert info.memory.spill_bytes == st.spill.nbytes
        prompts = [prompt(i) for i in range(5)]
        refs = [st.engine.reference(p, 3) for p in prompts]
        ids = [c.create(p, max_new=3, layers=(10, 20, 30), context=CTX).id for p in prompts]
        with pytest.raises(grpc.RpcError) as e:
            c.create(prompt(9), max_new=3, context=CTX)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "spill file" in e.value.details()
        done, spilled, back = {}, 0, 0
        while len(done) < 5:
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_SPILL, pb.EVENT_KIND_ERROR),
                            None, 120)
            assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
            if ev.kind == pb.EVENT_KIND_SPILL:
                assert ev.bytes > 0 and ev.ms > 0
                spilled += ev.text == "to disk"
                back += ev.text == "from disk"
            elif ev.kind == pb.EVENT_KIND_STOPPED:
                c.Continue(pb.SessionRef(session_id=ev.session_id))
            else:
                done[ev.session_id] = list(ev.session.generated_tokens)
        assert [done[i] for i in ids] == refs
        assert spilled >= 1 and back >= 1, (spilled, back)
        fig = st._spill_figures()   # what each telemetry sample carries
        assert fig["spills_out"] >= 1 and fig["spill_write_gb_per_s"] > 0 and fig["spill_read_gb_per_s"] > 0
        assert st.spill.used == 0 and st.pool.used == 0, "every region went back"


def test_a_spilled_paused_session_can_be_inspected(tmp_path):
    """GetTensor on a paused session whose state is on disk brings it back (disk -> pool -> device)."""
    with running_server(budget="auto:1", plan_sessions=1, plan_context=CTX, host_pool_gb=2 * REGION / 1e9,
                        swap_policy="eager", spill_dir=str(tmp_path), spill_gb=2 * REGION / 1e9) as (c, st):
        ids = [c.create(prompt(i), max_new=2, layers=(5,), context=CTX).id for i in range(4)]
        for sid in ids:
            c.wait(pb.EVENT_KIND_STOPPED, sid, timeout=60)
        c.wait(pb.EVENT_KIND_SPILL, None, timeout=60)
        on_disk = [s for s in st.scheduler.sessions.values() if s.memory.location == "disk"]
        assert on_disk, [s.memory.location for s in st.scheduler.sessions.values()]
        sid = on_disk[0].id
        before = st.engine.reference(on_disk[0].prompt_tokens, 2)
        r = c.stub.Evaluate(pb.EvaluateRequest(session_id=sid, expression="norm(hidden)"))
        assert r.ListFields(), r
        assert on_disk[0].memory.location == "device"
        for s in ids:
            c.Continue(pb.SessionRef(session_id=s))
        done = {}
        while len(done) < len(ids):
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_ERROR), None, 120)
            assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
            if ev.kind == pb.EVENT_KIND_STOPPED:
                c.Continue(pb.SessionRef(session_id=ev.session_id))
            else:
                done[ev.session_id] = list(ev.session.generated_tokens)
        assert done[sid] == before
