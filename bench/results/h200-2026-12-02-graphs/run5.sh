#!/usr/bin/env bash
# Device call 5: batching diagnostic, all CUDA tests of the batching file, the swap part, Exp 3 N=50 with the baseline.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
step "diag"
(cd $new && timeout 60 $py bench/diag_batch.py 2>&1 | tail -4)
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 150 $py -m pytest server/tests/test_batching.py server/tests/test_gqa.py \
   server/tests/test_expr_device.py server/tests/test_density.py -q -p no:cacheprovider -rf 2>&1 | grep -E "^FAILED|passed|failed" | head -20)
step "h200_perf: swap + exp3"
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 400 $py bench/h200_perf.py --device cuda --only swap,exp3 \
   --commit $(cat COMMIT) --out $OUT/h200-perf-swap-exp3.json 2>&1 | tail -12)
