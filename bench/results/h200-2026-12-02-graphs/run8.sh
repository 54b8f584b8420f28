#!/usr/bin/env bash
# Device call 8: the density run again on the fixed tree (one block per turn).
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new
(cd $new && PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 230 $py bench/h200_perf.py --device cuda --only density \
   --commit $(cat COMMIT) --out $OUT/h200-perf-density.json 2>&1 | tail -4)
