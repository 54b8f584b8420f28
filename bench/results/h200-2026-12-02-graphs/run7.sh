#!/usr/bin/env bash
# Device call 7: decode and batched throughput at --batch-rows 16 and 64 (one block per turn).
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
for r in 16 64; do
  step "rows $r: engine decode, server batched"
  (cd $new && PYTHONPATH=server timeout 100 $py bench/perf_engine.py --device cuda --batch-rows $r --parts decode \
     --decode-tokens 40 --out $OUT/engine-rows$r.json 2>&1 | tail -1)
  (cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 150 $py bench/h200_perf.py --device cuda --only batched \
     --batch-rows $r --sessions 50 --commit $(cat COMMIT) --out $OUT/batched-rows$r.json 2>&1 | tail -2)
done
