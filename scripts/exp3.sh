#!/usr/bin/env bash
# The main job: the Exp 3 memory-pressure test against a local Djinn server (on the GPU when
# torch sees one, else on the CPU with tiny-40l). Installs what it needs first.
# Flags go to the driver: scripts/exp3.sh --sessions 50 --out exp3-results ...
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
DJINN_SETUP_SKIP_E2E=1 bash scripts/setup.sh   # the VS Code test harness is not needed here
exec node dist/exp3.js "$@"
