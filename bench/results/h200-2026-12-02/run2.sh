#!/usr/bin/env bash
# Device call 2: h200_perf.py on this session's code and on the anchor (597e921, main at the session's start), same lease
G="$(cd "$(dirname "$0")" && pwd)"
for v in new anchor; do
  c=$([ $v = new ] && cat "$G/new/COMMIT" || echo 597e921ef88732a303265f6f64b29e74de74935f)
  echo "== $v ($c) $(date +%T)"
  (cd "$G/$v" && timeout 290 python3 bench/h200_perf.py --device cuda --sessions 20 --commit "$c" --out "$OUT/h200-perf-$v.json" 2>&1 | grep -E '^\[|error|Error' | tail -25)
done
