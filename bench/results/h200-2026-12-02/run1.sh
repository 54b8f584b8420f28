#!/usr/bin/env bash
# Device call 1: CUDA pytest subset + the GPU checks (issue 9's expression/summary changes, issue 10's swap/pool/prefetch)
cd "$(dirname "$0")/new"
export DJINN_COMMIT=$(cat COMMIT)
mkdir -p .gpu && cp ../node.xz .gpu/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
if python3 -m pytest --version >/dev/null 2>&1; then
  echo "== pytest (CUDA subset)"
  (cd server && timeout 150 python3 -m pytest tests/test_gqa.py tests/test_small_results.py tests/test_expr_device.py tests/test_host_pool_pinning.py tests/test_prefetch.py -q -p no:cacheprovider 2>&1 | tail -15)
else
  echo "no pytest on the device"
fi
mkdir -p "$OUT/checks"
OUT="$OUT/checks" bash bench/gpu_checks.sh
