"""How fast can the host pool be pinned? Sequential vs threaded chunk allocation (H200 host)."""
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

CHUNK = 8 * 10**9
N = int(sys.argv[1]) if len(sys.argv) > 1 else 4
out = {}
torch.cuda.init()
torch.empty(1, device="cuda")
t = time.perf_counter()
bufs = [torch.empty(CHUNK, dtype=torch.uint8, pin_memory=True) for _ in range(N)]
out["sequential_s_per_gib"] = (time.perf_counter() - t) / (N * CHUNK / 2**30)
del bufs
for threads in (2, 4, 8):
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        bufs = list(ex.map(lambda _: torch.empty(CHUNK, dtype=torch.uint8, pin_memory=True), range(N)))
    out[f"threads{threads}_s_per_gib"] = (time.perf_counter() - t) / (N * CHUNK / 2**30)
    del bufs
# register-after-allocate path: plain memory, touched, then cudaHostRegister per chunk in threads
def reg(_):
    b = torch.empty(CHUNK, dtype=torch.uint8)
    b.fill_(0)
    r = torch.cuda.cudart().cudaHostRegister(b.data_ptr(), b.numel(), 0)
    return b, r
t = time.perf_counter()
with ThreadPoolExecutor(4) as ex:
    res = list(ex.map(reg, range(N)))
out["register_threads4_s_per_gib"] = (time.perf_counter() - t) / (N * CHUNK / 2**30)
out["register_rc"] = [int(r) for _, r in res]
print(json.dumps(out))
