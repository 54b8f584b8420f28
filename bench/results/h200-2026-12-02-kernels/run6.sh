#!/usr/bin/env bash
# Device call 6: huge-page pinning: the host-pool CUDA tests, server ready and Exp 3 N=50 with the
# baseline; the shared-server GPU checks (hostile input, hostile expressions) on the new kernels.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
step "CUDA tests (host pool)"
(cd $new && PYTHONPATH=server:server/tests timeout 60 $py -m pytest server/tests/test_host_pool_pinning.py server/tests/test_host_pool.py \
   -q -p no:cacheprovider -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -10)
step "ready + exp3"
(cd $new && NODE=/tmp/node PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 200 $py bench/h200_perf.py --device cuda \
   --only ready,exp3 --commit $(cat COMMIT) --out $OUT/h200-perf-exp3.json 2>&1 | tail -5)
step "gpu_safety"
(cd $new && PYTHONPATH=server timeout 80 $py bench/gpu_safety.py --model llama-2-13b --out $OUT 2>&1 | tail -12)
step "gpu_expr_checks"
(cd $new && PYTHONPATH=server timeout 60 $py bench/gpu_expr_checks.py --model llama-2-13b --out $OUT 2>&1 | tail -6)
