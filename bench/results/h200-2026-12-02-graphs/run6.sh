#!/usr/bin/env bash
# Device call 6: the batching tests on CUDA, batched/serial throughput, Exp 3 N=50 with the baseline.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 120 $py -m pytest server/tests/test_batching.py server/tests/test_density.py \
   -q -p no:cacheprovider -rf 2>&1 | grep -E "^FAILED|passed|failed" | head -20)
step "h200_perf: serial, batched, exp3"
(cd $new && NODE=/tmp/node PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 450 $py bench/h200_perf.py --device cuda \
   --only serial,batched,exp3 --sessions 50 --commit $(cat COMMIT) --out $OUT/h200-perf-exp3.json 2>&1 | tail -10)
cp -r $new/bench/results/* $OUT/ 2>/dev/null; ls $OUT
