#!/usr/bin/env bash
# Device call 4: CUDA tests, then every part of h200_perf except exp3 (decode, prefill, hf, swap,
# ready, serial, batched, decode_server, resume) and the density run, in one JSON.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 150 $py -m pytest server/tests/test_batching.py server/tests/test_gqa.py \
   server/tests/test_expr_device.py server/tests/test_density.py -q -p no:cacheprovider -x -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -20)
step "h200_perf: all but exp3, with density"
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 480 $py bench/h200_perf.py --device cuda --density \
   --sessions 50 --commit $(cat COMMIT) --out $OUT/h200-perf.json 2>&1 | tail -30)
