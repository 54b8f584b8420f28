#!/usr/bin/env bash
# Device call 4: decode through the server only, anchor and new alternating, 60 timed tokens each
G="$(cd "$(dirname "$0")" && pwd)"
for r in 1 2; do for v in anchor new; do
  c=$([ $v = new ] && cat "$G/new/COMMIT" || echo 597e921ef88732a303265f6f64b29e74de74935f)
  echo "== round $r $v $(date +%T)"
  (cd "$G/$v" && timeout 140 python3 bench/h200_perf.py --device cuda --sessions 4 --decode-tokens 60 --only decode_server --commit "$c" --out "$OUT/decode-server-$v-$r.json" 2>&1 | grep -E 'decode_server_ms_per_token |pinned|rror' | tail -4)
done; done
