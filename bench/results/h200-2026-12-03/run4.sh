#!/usr/bin/env bash
# Device call 4: Exp 3 with the driver's prefetch hints; 64-row decode blocks (engine decode, serial/batched
# through the server); where a fused 2016-token prefill's time goes.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
step() { echo; echo "== $* ($(date +%T))"; }
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
cd $new
step "h200_perf: exp3"
NODE=/tmp/node PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 200 $py bench/h200_perf.py --device cuda --only exp3 --exp3 \
   --commit $(cat COMMIT) --out $OUT/h200-perf-exp3.json 2>&1 | grep -E "exp3\||exp3_" | tail -14
step "64-row blocks: engine decode and prefill"
PYTHONPATH=server timeout 100 $py bench/perf_engine.py --parts decode,prefill --batch-rows 64 --out $OUT/engine-rows64.json 2>&1 | grep -E "decode at|prefill of" | tail -2
step "64-row blocks: serial and batched through the server (50 x 16)"
PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 200 $py bench/h200_perf.py --device cuda --only serial,batched --batch-rows 64 \
   --host-pool-gb 8 --commit $(cat COMMIT) --out $OUT/h200-perf-rows64.json 2>&1 | grep -E "tokens_per_s|tokens/s" | tail -4
step "profile: fused prefill of 2016 tokens"
PYTHONPATH=server timeout 120 $py bench/profile_decode.py --prefill-tokens 2016 --out $OUT/profile.json 2>&1 | sed -n '/^prefill/,$p' | head -34
