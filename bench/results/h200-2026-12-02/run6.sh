#!/usr/bin/env bash
# Device call 6: the CUDA host-pool tests, then Exp 3 (N=50, 13B, 80 GB, no baseline) with reservations that never wait for pinning
cd "$(dirname "$0")/new"
export DJINN_COMMIT=$(cat COMMIT) PYTHONPATH="$PWD/server"
(cd server && timeout 60 python3 -m pytest tests/test_host_pool_pinning.py tests/test_host_pool.py -q -p no:cacheprovider 2>&1 | tail -2)
xz -dc ../node.xz > /tmp/node && chmod +x /tmp/node
/tmp/node dist/exp3.js --python python3 --out "$OUT/exp3" 2>&1 | grep -v '^\[' | tail -8
