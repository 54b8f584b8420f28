#!/usr/bin/env bash
# Device call 3: CUDA tests (kernels, zero-copy transfers, batching, prefill); every h200_perf part with Exp 3
# (density ran in call 2); GPU safety checks.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
cd $new
step "CUDA tests"
PYTHONPATH=server:server/tests timeout 200 $py -m pytest server/tests/test_hostcopy.py server/tests/test_decode_attention.py \
   server/tests/test_batching.py server/tests/test_prefill_kernels.py server/tests/test_gqa.py server/tests/test_architectures.py \
   -q -p no:cacheprovider -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -30
step "anchor 00f9a95 (the session's starting main): engine decode + prefill"
(cd ../old && PYTHONPATH=server timeout 100 $py bench/perf_engine.py --parts decode,prefill --out $OUT/engine-anchor.json 2>&1 | grep -E "decode at|prefill of" | tail -2)
step "attention kernels"
PYTHONPATH=server timeout 90 $py bench/attention_kernels.py --out $OUT/attention-kernels.json 2>&1 | tail -12
step "h200_perf: all parts with Exp 3"
NODE=/tmp/node PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 330 $py bench/h200_perf.py --device cuda --exp3 \
   --sessions 50 --commit $(cat COMMIT) --out $OUT/h200-perf.json 2>&1 | grep -E "^\[h200_perf|exp3|Exp 3|error|Error" | tail -40
step "gpu_safety"
PYTHONPATH=server timeout 80 $py bench/gpu_safety.py --model llama-2-13b --out $OUT 2>&1 | tail -8
step "gpu_expr_checks"
PYTHONPATH=server timeout 60 $py bench/gpu_expr_checks.py --model llama-2-13b --out $OUT 2>&1 | tail -4
