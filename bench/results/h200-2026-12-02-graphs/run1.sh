#!/usr/bin/env bash
# Device call 1 (issue 10, decode blocks + CUDA graphs): CUDA tests, engine decode/prefill for three
# settings of the new tree and the anchor tree (ece57b0) in the same lease, then the server parts.
# Run on the GPU host from the repository root of the carried working tree: bash .../run1.sh
set -uo pipefail
OUT="${OUT:?}"
py=python3
new=.gpu/new; old=.gpu/old
step() { echo; echo "== $* ($(date +%T))"; }
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests $py -m pytest server/tests/test_batching.py server/tests/test_gqa.py \
   server/tests/test_expr_device.py -q -p no:cacheprovider -x 2>&1 | tail -8)
for cfg in "16 on" "1 on" "16 off"; do
  set -- $cfg
  step "engine decode+prefill, batch-rows $1, graphs $2"
  (cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 200 $py bench/perf_engine.py --device cuda \
     --batch-rows $1 --cuda-graphs $2 --parts decode,prefill --decode-tokens 40 --out $OUT/engine-rows$1-graphs$2.json 2>&1 | tail -4)
done
step "anchor engine decode+prefill (ece57b0)"
(cd $old && PYTHONPATH=server timeout 200 $py bench/perf_engine.py --device cuda --parts decode,prefill --decode-tokens 40 \
   --out $OUT/engine-anchor.json 2>&1 | tail -4)
step "server parts (new): ready, serial, batched, decode_server"
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 300 $py bench/h200_perf.py --device cuda \
   --only ready,serial,batched,decode_server --sessions 50 --commit $(cat COMMIT) --out $OUT/server-new.json 2>&1 | tail -12)
