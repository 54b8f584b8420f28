#!/usr/bin/env bash
# Builds a clean, runnable tree of one commit under .gpu/NAME for the lent GPU host (which has no
# grpcio-tools and no Node): the commit's files, the generated Python and TypeScript stubs, the
# bundled extension/driver (dist/), and COMMIT. Carry ".gpu" to the device; there, run from
# .gpu/NAME with DJINN_COMMIT=$(cat COMMIT). Usage: bash scripts/gpu-snapshot.sh NAME [COMMIT]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?name}"; rev="${2:-HEAD}"
cd "$root"
mkdir -p .git/info && grep -qx '.gpu/' .git/info/exclude 2>/dev/null || echo '.gpu/' >> .git/info/exclude
[ -f .gpu/node.xz ] || { mkdir -p .gpu; xz -T2 -c "$(command -v node)" > .gpu/node.xz; }
dst=".gpu/$name"
rm -rf "$dst" && mkdir -p "$dst"
git archive "$rev" | tar -x -C "$dst"
git rev-parse --short "$rev" > "$dst/COMMIT"
ln -s "$root/node_modules" "$dst/node_modules"
(cd "$dst" && DJINN_SETUP_PYTHON="$root/.venv/bin/python" bash scripts/gen-proto.sh && node esbuild.mjs >/dev/null)
rm -f "$dst/node_modules"
rm -rf "$dst/docs/images" "$dst/bench/results" "$dst/e2e" "$dst/test"
find "$dst" -name '*.map' -delete
du -sh "$dst"
