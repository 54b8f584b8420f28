#!/usr/bin/env bash
# Device call 3: decode figures again, anchor and new alternating (call 2's decode_server and HF figures differed by up to 70%)
G="$(cd "$(dirname "$0")" && pwd)"
for r in 1 2; do for v in anchor new; do
  c=$([ $v = new ] && cat "$G/new/COMMIT" || echo 597e921ef88732a303265f6f64b29e74de74935f)
  echo "== round $r $v $(date +%T)"
  (cd "$G/$v" && timeout 200 python3 bench/h200_perf.py --device cuda --sessions 4 --only decode,hf_decode,decode_server --commit "$c" --out "$OUT/decode-$v-$r.json" 2>&1 | grep -E 'decode_ms_per_token |decode_server_ms_per_token |hf_decode_ms_per_token |rror' | tail -6)
done; done
