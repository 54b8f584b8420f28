import pytest
import torch

from djinn.runtime.host_pool import ALIGN, HostPool, HostPoolFull


def test_regions_never_straddle_chunks_and_free_space_merges():
    pool = HostPool(10 * ALIGN, pin=False, chunk_bytes=4 * ALIGN)   # chunks of 4, 4, 2 pages
    assert [b.numel() for b in pool.buffers] == [4 * ALIGN, 4 * ALIGN, 2 * ALIGN]
    a = pool.reserve(3 * ALIGN)
    b = pool.reserve(3 * ALIGN)          # does not fit the 1 page left in chunk 0
    assert a[0] == 0 and b[0] == 4 * ALIGN
    c = pool.reserve(2 * ALIGN)
    assert c[0] == 8 * ALIGN
    with pytest.raises(HostPoolFull, match="host pool full"):
        pool.reserve(2 * ALIGN)
    pool.view(b[0], torch.float32, (3 * ALIGN // 4,)).fill_(7)
    assert pool.buffers[1][: 3 * ALIGN].view(torch.float32).eq(7).all()
    pool.release(*a)
    assert pool.reserve(4 * ALIGN)[0] == 0   # released and merged with the tail of chunk 0
    assert pool.used == 9 * ALIGN
