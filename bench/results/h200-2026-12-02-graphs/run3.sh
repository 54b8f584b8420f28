#!/usr/bin/env bash
# Device call 3: CUDA tests, the decode profile (rows 16), engine decode/prefill, the server parts.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests $py -m pytest server/tests/test_batching.py server/tests/test_gqa.py \
   server/tests/test_expr_device.py -q -p no:cacheprovider 2>&1 | tail -8)
step "profile rows 16"
(cd $new && PYTHONPATH=server timeout 120 $py bench/profile_decode.py --batch-rows 16 --out $OUT/profile-rows16.json 2>&1 | grep -v Warn | head -75)
step "server parts (new): ready, serial, batched, decode_server"
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 300 $py bench/h200_perf.py --device cuda \
   --only decode,prefill,ready,serial,batched,decode_server --sessions 50 --commit $(cat COMMIT) --out $OUT/server-new.json 2>&1 | tail -12)
