"""How fast can plain host memory be page-locked here? 8 chunks of 2 GB registered on 8 threads,
allocated three ways: torch.empty (what runtime/host_pool.py does), an anonymous mmap with
MADV_HUGEPAGE (transparent huge pages: 512x fewer page faults), and the same with the pages
touched before registering. Prints and writes JSON (seconds per GiB, the THP setting).

  python bench/pin_probe.py --out bench/results/.../pin-probe.json
"""
import argparse
import json
import mmap
import time
from concurrent.futures import ThreadPoolExecutor

import torch

CHUNK, N = 2 * 10**9, 8


def plain(_):
    return torch.empty(CHUNK, dtype=torch.uint8), None


def huge(touch):
    def make(_):
        m = mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_HUGEPAGE)
        t = torch.frombuffer(m, dtype=torch.uint8)
        if touch:
            t[::4096].fill_(0)
        return t, m
    return make


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    o = p.parse_args()
    torch.empty(1, device="cuda")
    rt = torch.cuda.cudart()
    try:
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
    except OSError as e:
        thp = f"unreadable: {e}"
    res = dict(chunk_bytes=CHUNK, chunks=N, threads=N, thp=thp, results={})
    for name, make in (("torch_empty", plain), ("mmap_hugepage", huge(False)), ("mmap_hugepage_touched", huge(True))):
        def one(i):
            t, m = make(i)
            rc = rt.cudaHostRegister(t.data_ptr(), CHUNK, 0)
            return t, m, int(rc)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(N) as ex:
            bufs = list(ex.map(one, range(N)))
        s = time.perf_counter() - t0
        ok = all(rc == 0 for _, _, rc in bufs)
        res["results"][name] = dict(s_per_gib=round(s / (N * CHUNK / 2**30), 4), gb_per_s=round(N * CHUNK / s / 1e9, 2), ok=ok)
        print(name, res["results"][name], flush=True)
        for t, m, rc in bufs:
            if rc == 0:
                rt.cudaHostUnregister(t.data_ptr())
        del bufs
    with open(o.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
