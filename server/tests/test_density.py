"""Admission counts the device and the host pool together: a host region is reserved only when a
session leaves the device, so a server holds what fits resident plus what fits in the pool (less
one session's room for a copy in flight), every session finishes with its reference, and the next
one is refused with RESOURCE_EXHAUSTED saying what is full."""
import random

import grpc
import pytest

from djinn.v1 import djinn_pb2 as pb
from harness import running_server

CTX = 32


def prompt(seed, n=24):
    r = random.Random(seed)
    return [r.randrange(3, 500) for _ in range(n)]


def test_the_device_and_the_pool_hold_sessions_together_and_every_one_finishes_right():
    region = (40 * 2 * 2 * CTX * 32 + 4 * CTX * 128) * 4          # tiny-40l KV + activations, fp32
    with running_server(budget="auto:2", plan_sessions=1, plan_context=CTX, host_pool_gb=2 * region / 1e9,
                        swap_policy="pressure") as (c, st):
        assert st.pool.capacity(region) == 2 * region                 # two regions in the pool, two on the device
        prompts = [prompt(i) for i in range(3)]
        refs = [st.engine.reference(p, 3) for p in prompts]
        ids = [c.create(p, max_new=3, layers=(10,), context=CTX).id for p in prompts]   # the old rule admitted 2
        with pytest.raises(grpc.RpcError) as e:
            c.create(prompt(9), max_new=3, context=CTX)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "host pool" in e.value.details()
        assert st.pool.used == 0, "no region is reserved at creation"
        # all three reach their first stop before anyone goes on: the third needed one of the
        # first two paused ones to leave the device for the pool
        first = {c.wait(pb.EVENT_KIND_STOPPED, sid, timeout=60).session_id for sid in ids}
        assert c.wait(pb.EVENT_KIND_SWAP_OUT, None, timeout=60).bytes > 0
        for sid in first:
            c.Continue(pb.SessionRef(session_id=sid))
        done, swapped = {}, 1
        while len(done) < 3:
            ev = c.wait_any((pb.EVENT_KIND_STOPPED, pb.EVENT_KIND_FINISHED, pb.EVENT_KIND_SWAP_OUT, pb.EVENT_KIND_ERROR),
                            None, 120)
            assert ev.kind != pb.EVENT_KIND_ERROR, ev.text
            if ev.kind == pb.EVENT_KIND_SWAP_OUT:
                swapped += 1
            elif ev.kind == pb.EVENT_KIND_STOPPED:
                c.Continue(pb.SessionRef(session_id=ev.session_id))
            else:
                done[ev.session_id] = list(ev.session.generated_tokens)
        assert [done[i] for i in ids] == refs and swapped >= 1, swapped
        assert st.pool.used == 0, "every region went back to the pool"
