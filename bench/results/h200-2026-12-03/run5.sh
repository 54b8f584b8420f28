#!/usr/bin/env bash
# Device call 5: after the telemetry/ledger change: CUDA tests of the runtime, gpu_safety.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
cd $new
echo "== CUDA tests ($(date +%T))"
PYTHONPATH=server:server/tests timeout 200 $py -m pytest server/tests/test_hostcopy.py server/tests/test_batching.py \
   server/tests/test_sessions.py server/tests/test_spill.py -q -p no:cacheprovider -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -20
echo "== gpu_safety ($(date +%T))"
PYTHONPATH=server timeout 90 $py bench/gpu_safety.py --model llama-2-13b --out $OUT 2>&1 | tail -3
