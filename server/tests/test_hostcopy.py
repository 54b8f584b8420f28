"""Small transfers by kernel (kernels/hostcopy.py): the same numbers as copies, and not held up by
a swap-sized copy in flight on the copy engines (CUDA only)."""
import pytest
import torch

from djinn.kernels import hostcopy

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_off_cuda_it_says_no():
    assert hostcopy.available(torch.device("cpu")) is False


@cuda_only
def test_uploads_and_readbacks_equal_copies():
    dev = torch.device("cuda", torch.cuda.current_device())
    assert hostcopy.available(dev)
    st, rb = hostcopy.Staging(dev, nbytes=1 << 12, slots=2), hostcopy.Readback(dev)
    for n in (1, 7, 300, 5000):            # 5000 int64 > one slot: the plain copy
        vals = torch.randint(0, 32000, (n,), dtype=torch.long)
        out = st.upload(vals, torch.empty(n, dtype=torch.long, device=dev))
        assert torch.equal(out.cpu(), vals)
    x = torch.randn(3, 32000, device=dev)
    assert torch.equal(rb.read(x), x.cpu())


@cuda_only
def test_a_readback_does_not_wait_for_a_big_copy():
    dev = torch.device("cuda", torch.cuda.current_device())
    big = torch.empty(1 << 30, dtype=torch.uint8, device=dev)     # 1 GiB: tens of ms each way
    host = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
    side = torch.cuda.Stream(dev)
    x = torch.randn(16, 32000, device=dev)
    rb = hostcopy.Readback(dev)
    rb.read(x)
    torch.cuda.synchronize()
    done = torch.cuda.Event()
    with torch.cuda.stream(side):
        host.copy_(big, non_blocking=True)
        done.record()
    got = rb.read(x)                       # returns once its own kernel ran
    assert not done.query(), "the readback waited for the 1 GiB copy"
    assert torch.equal(got, x.cpu())
    side.synchronize()
