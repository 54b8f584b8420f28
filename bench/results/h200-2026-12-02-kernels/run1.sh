#!/usr/bin/env bash
# Device call 1: Triton present?; the CUDA tests of the block attention and the batching; the
# decode profile; engine decode of the new tree beside the anchor (049f4a5), same lease.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new; old=.gpu/old
step() { echo; echo "== $* ($(date +%T))"; }
step "versions"
$py -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))"
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 200 $py -m pytest server/tests/test_decode_attention.py server/tests/test_batching.py \
   server/tests/test_gqa.py server/tests/test_expr_device.py -q -p no:cacheprovider -x -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -30)
step "profile (new, rows 16)"
(cd $new && PYTHONPATH=server timeout 120 $py bench/profile_decode.py --out $OUT/profile-rows16.json 2>&1 | head -40)
for t in new old; do
  step "engine decode+prefill $t"
  (cd .gpu/$t && PYTHONPATH=server timeout 120 $py bench/perf_engine.py --device cuda --batch-rows 16 --parts decode,prefill \
     --decode-tokens 40 --out $OUT/engine-$t.json 2>&1 | tail -2)
done
