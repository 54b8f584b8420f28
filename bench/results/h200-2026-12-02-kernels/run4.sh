#!/usr/bin/env bash
# Device call 4: CUDA tests; attention sweep; every h200_perf part but exp3, with density.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 150 $py -m pytest server/tests/test_decode_attention.py server/tests/test_batching.py \
   server/tests/test_gqa.py server/tests/test_density.py -q -p no:cacheprovider -x -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -30)
step "attention kernels"
(cd $new && PYTHONPATH=server timeout 60 $py bench/attention_kernels.py --out $OUT/attention-kernels.json 2>&1 | tail -16)
step "h200_perf: all but exp3, with density"
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 400 $py bench/h200_perf.py --device cuda --density \
   --sessions 50 --commit $(cat COMMIT) --out $OUT/h200-perf.json 2>&1 | tail -32)
