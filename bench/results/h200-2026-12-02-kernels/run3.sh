#!/usr/bin/env bash
# Device call 3: CUDA tests; attention kernel sweep; profile; engine decode/prefill; server
# serial/batched/decode of the new tree and serial/batched of the anchor (049f4a5), same lease.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 200 $py -m pytest server/tests/test_decode_attention.py server/tests/test_batching.py \
   server/tests/test_gqa.py server/tests/test_expr_device.py -q -p no:cacheprovider -x -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -30)
step "attention kernels"
(cd $new && PYTHONPATH=server timeout 100 $py bench/attention_kernels.py --out $OUT/attention-kernels.json 2>&1 | tail -22)
step "profile"
(cd $new && PYTHONPATH=server timeout 100 $py bench/profile_decode.py --out $OUT/profile-rows16.json 2>&1 | head -42 | tail -34)
step "engine decode+prefill new"
(cd $new && PYTHONPATH=server timeout 100 $py bench/perf_engine.py --device cuda --batch-rows 16 --parts decode,prefill \
   --decode-tokens 40 --out $OUT/engine-new.json 2>&1 | tail -2)
for t in new old; do
  step "server serial/batched $t"
  (cd .gpu/$t && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 170 $py bench/h200_perf.py --device cuda \
     --only serial,batched,decode_server --sessions 50 --commit $(cat COMMIT) --out $OUT/server-$t.json 2>&1 | tail -4)
done
