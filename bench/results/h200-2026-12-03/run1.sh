#!/usr/bin/env bash
# Device call 1 (2026-12-03 session): profile before optimising. Disk speed, attention kernel sweep,
# engine decode (row kernel vs one-tile kernel, block of 1 vs 16), prefill profile, batched server under py-spy.
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new; spy=$PWD/.gpu/pyspy/bin/py-spy
step() { echo; echo "== $* ($(date +%T))"; }
cd $new
step "disk"
df -h . /tmp | tail -2
dd if=/dev/zero of=./spill-probe.bin bs=64M count=64 oflag=direct 2>&1 | tail -1
dd if=./spill-probe.bin of=/dev/null bs=64M iflag=direct 2>&1 | tail -1
rm -f ./spill-probe.bin
step "attention sweep"
PYTHONPATH=server timeout 120 $py bench/attention_kernels.py --out $OUT/attention-kernels.json 2>&1 | tail -20
step "engine decode: row kernel (as main)"
PYTHONPATH=server timeout 120 $py bench/perf_engine.py --parts decode --out $OUT/engine-row.json 2>&1 | grep -E "decode|ms" | tail -3
for cfg in "64 4" "128 4"; do set -- $cfg
step "engine decode: tile kernel chunk $1 warps $2"
DJINN_ATTENTION_TILE=1 DJINN_ATTENTION_CHUNK=$1 DJINN_ATTENTION_WARPS=$2 PYTHONPATH=server timeout 120 $py bench/perf_engine.py --parts decode --out $OUT/engine-tile-$1-$2.json 2>&1 | grep -E "decode|ms" | tail -3
done
step "engine decode: block of 1 row"
PYTHONPATH=server timeout 120 $py bench/perf_engine.py --parts decode --batch-rows 1 --out $OUT/engine-rows1.json 2>&1 | grep -E "decode|ms" | tail -3
step "profile decode + prefill 2016"
PYTHONPATH=server timeout 150 $py bench/profile_decode.py --prefill-tokens 2016 --out $OUT/profile.json 2>&1 | tail -75
for br in 16 64; do
step "batched 50x16 under py-spy, batch rows $br"
PYTHONPATH=server timeout 150 $py bench/profile_batched.py --batch-rows $br --py-spy $spy --out $OUT/batched-br$br.json 2>&1 | head -c 2500
done
