#!/usr/bin/env bash
# The GPU checks of the shared-server work, in one device call (each writes its JSON to $OUT):
#   gpu_safety.py       hostile input from one user, another user unharmed, an injected real device
#                       fault (sessions failed, UNAVAILABLE, exit code 3)
#   gpu_expr_checks.py  every hostile expression on CUDA, then the device still healthy
#   fair_turns.py       B continued while A generates 300 tokens (13B)
#   Exp 3 (N=50)        the scheduler change must keep it a success (needs a carried Node: .gpu/node.xz)
# Usage (on the GPU host, from the repository root): OUT=/some/dir bash bench/gpu_checks.sh
set -uo pipefail
OUT="${OUT:?set OUT}"
export PYTHONPATH="$PWD/server"
py="${PYTHON:-python3}"
rc=0
step() { echo; echo "== $* ($(date +%T))"; }
step "gpu_safety (llama-2-13b)"
$py bench/gpu_safety.py --model llama-2-13b --out "$OUT" 2>&1 | tail -25 || rc=1
step "gpu_expr_checks (llama-2-13b)"
$py bench/gpu_expr_checks.py --model llama-2-13b --out "$OUT" 2>&1 | tail -15 || rc=1
step "fair_turns (llama-2-13b)"
$py bench/fair_turns.py --model llama-2-13b --device cuda --out "$OUT/fair-turns-h200.json" 2>&1 \
  | grep -E '"(b_|a_|limit|target|device)' || rc=1
if [ -f .gpu/node.xz ] && [ -f dist/exp3.js ]; then
  step "Exp 3, N=50, llama-2-13b, 80 GB"
  xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
  /tmp/node dist/exp3.js --python "$py" --out "$OUT/exp3" 2>&1 | grep -v '^\[' | tail -12 || rc=1
fi
exit $rc
