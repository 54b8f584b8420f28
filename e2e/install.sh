#!/usr/bin/env bash
# Installs the e2e harness, idempotently: Debian chromium, libkrb5-dev and ripgrep when missing,
# then code-server 4.100.3 + playwright-core in e2e/node_modules (skipped when the lockfile
# has not changed since the last install). See ../shared/TESTING-VSCODE.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
say() { echo "[e2e-install] $*"; }
missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v rg >/dev/null 2>&1 || missing+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
stamp=node_modules/.djinn-e2e-stamp
hash_inputs() { { cat package.json; cat package-lock.json 2>/dev/null || true; } | sha256sum | cut -c1-16; }
h=$(hash_inputs)
if [ -f node_modules/code-server/out/node/entry.js ] && [ -d node_modules/code-server/lib/vscode/node_modules ] && [ "$(cat $stamp 2>/dev/null)" = "$h" ]; then
  say "code-server and playwright-core already installed"
  exit 0
fi
sh seed-ripgrep.sh
if [ -f package-lock.json ]; then
  say "npm ci (code-server 4.100.3, playwright-core)"
  npm ci --foreground-scripts --no-audit --no-fund --loglevel=error > "${TMPDIR:-/tmp}/djinn-e2e-npm.log" 2>&1 || { tail -40 "${TMPDIR:-/tmp}/djinn-e2e-npm.log"; exit 1; }
else
  say "npm install (creates e2e/package-lock.json)"
  npm install --foreground-scripts --no-audit --no-fund --loglevel=error > "${TMPDIR:-/tmp}/djinn-e2e-npm.log" 2>&1 || { tail -40 "${TMPDIR:-/tmp}/djinn-e2e-npm.log"; exit 1; }
fi
h=$(hash_inputs)
echo "$h" > "$stamp"
say "done"
