#!/usr/bin/env bash
# Device call 2: CUDA tests of the changed parts; disk probe; every h200_perf part but exp3, with density (disk tier).
set -uo pipefail
OUT="${OUT:?}"; py=python3; new=.gpu/new; spy=$PWD/.gpu/pyspy/bin/py-spy
step() { echo; echo "== $* ($(date +%T))"; }
cd $new
step "disk"
{ df -h . /tmp; dd if=/dev/zero of=./spill-probe.bin bs=64M count=64 oflag=direct 2>&1 | tail -1;
  dd if=./spill-probe.bin of=/dev/null bs=64M iflag=direct 2>&1 | tail -1; rm -f ./spill-probe.bin; } > $OUT/disk.txt 2>&1
cat $OUT/disk.txt
step "CUDA tests"
PYTHONPATH=server:server/tests timeout 200 $py -m pytest server/tests/test_decode_attention.py server/tests/test_batching.py \
   server/tests/test_prefill_kernels.py server/tests/test_gqa.py server/tests/test_spill.py server/tests/test_density.py \
   -q -p no:cacheprovider -rf 2>&1 | grep -E "^E  |passed|failed|Error" | head -30
step "h200_perf: all but exp3, with density"
PYTHONPATH=server DJINN_COMMIT=$(cat COMMIT) timeout 420 $py bench/h200_perf.py --device cuda --density \
   --sessions 50 --commit $(cat COMMIT) --out $OUT/h200-perf.json 2>&1 | grep -E "^\[h200_perf|density|error|Error" | tail -45
