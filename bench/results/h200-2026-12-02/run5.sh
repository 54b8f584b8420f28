#!/usr/bin/env bash
# Device call 5: Exp 3 (N=50, 13B, 80 GB, no baseline) after the next-in-line prefetch stopped evicting
cd "$(dirname "$0")/new"
export DJINN_COMMIT=$(cat COMMIT) PYTHONPATH="$PWD/server"
xz -dc ../node.xz > /tmp/node && chmod +x /tmp/node
/tmp/node dist/exp3.js --python python3 --out "$OUT/exp3" 2>&1 | grep -v '^\[' | tail -12
