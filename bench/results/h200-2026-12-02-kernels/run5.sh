#!/usr/bin/env bash
# Device call 5: page-locking probe; CUDA tests; Exp 3 N=50 with the baseline; batched and serial
# throughput with 128 generated tokens (prefill amortised), same tree.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
step "pin probe"
(cd $new && timeout 60 $py bench/pin_probe.py --out $OUT/pin-probe.json 2>&1 | tail -5)
step "CUDA tests"
(cd $new && PYTHONPATH=server:server/tests timeout 150 $py -m pytest server/tests/test_decode_attention.py server/tests/test_batching.py \
   server/tests/test_gqa.py server/tests/test_density.py server/tests/test_expr_device.py -q -p no:cacheprovider -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -30)
step "exp3"
(cd $new && NODE=/tmp/node PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 260 $py bench/h200_perf.py --device cuda \
   --only exp3 --commit $(cat COMMIT) --out $OUT/h200-perf-exp3.json 2>&1 | tail -6)
step "batched 50 x 128, serial 8 x 128"
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 100 $py bench/h200_perf.py --device cuda --only batched \
   --sessions 50 --gen-tokens 128 --commit $(cat COMMIT) --out $OUT/batched-128.json 2>&1 | tail -2)
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 80 $py bench/h200_perf.py --device cuda --only serial \
   --sessions 8 --gen-tokens 128 --commit $(cat COMMIT) --out $OUT/serial-128.json 2>&1 | tail -2)
