#!/usr/bin/env bash
# The VS Code end-to-end tests of the Djinn Debugger, in code-server 4.100.3 with headless
# chromium (see ../shared/TESTING-VSCODE.md), against real Djinn servers on the CPU:
#   1. the extension-host suite (mocha, test/extension/) inside code-server's extension host;
#   2. the UI run a person would do (e2e/ui-run.js), with screenshots;
#   3. the packaged .vsix installed into a fresh code-server (e2e/vsix-smoke.js).
# Installs what it needs first (e2e/install.sh; expects scripts/setup.sh to have run).
# Each part prints "N passed, N failed"; the last line sums them. Exit 0 iff all passed.
# Env: DJINN_E2E_SKIP="ext ui vsix" (any of them), SHOTS=dir, RESULTS=dir, UPDATE_DOC_SHOTS=1.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
skip=" ${DJINN_E2E_SKIP:-} "
export RESULTS="${RESULTS:-${TMPDIR:-/tmp}/djinn-ext-test-results}"
export SHOTS="${SHOTS:-${TMPDIR:-/tmp}/djinn-ui-shots}"
logs=$(mktemp -d)
passed=0; failed=0; rc=0
count() { # sums the last "N passed, N failed" line of a log
  local line; line=$(grep -Eo '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  if [ -z "$line" ]; then failed=$((failed + 1)); return; fi
  passed=$((passed + $(echo "$line" | cut -d' ' -f1))); failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
}

bash e2e/install.sh || { echo "e2e install failed"; echo "0 passed, 1 failed"; exit 1; }
echo "== building the extension, the webviews and the extension-host tests"
node esbuild.mjs >/dev/null && node esbuild.mjs --ext-tests >/dev/null || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

if [[ "$skip" != *" ext "* ]]; then
  echo "== extension-host tests (mocha in code-server's extension host, real server on the CPU)"
  (cd e2e && node run-ext-tests.js) 2>&1 | tee "$logs/ext.log" || rc=1
  (cd e2e && node print-summary.js) | tee -a "$logs/ext.log"
  count "$logs/ext.log"
fi
if [[ "$skip" != *" ui "* ]]; then
  echo "== UI run (code-server + headless chromium; screenshots in $SHOTS)"
  (cd e2e && node ui-run.js) 2>&1 | tee "$logs/ui.log" || rc=1
  count "$logs/ui.log"
fi
if [[ "$skip" != *" vsix "* ]]; then
  echo "== the packaged extension (vsce package, installed into a fresh code-server)"
  vsix="$logs/djinn-debugger.vsix"
  if npx --no-install @vscode/vsce package --no-dependencies --allow-missing-repository --no-rewrite-relative-links -o "$vsix" < /dev/null > "$logs/vsce.log" 2>&1; then
    grep -E 'Packaged|DONE' "$logs/vsce.log" | tail -1
    (cd e2e && node vsix-smoke.js "$vsix") 2>&1 | tee "$logs/vsix.log" || rc=1
    count "$logs/vsix.log"
  else
    tail -20 "$logs/vsce.log"; echo "vsce package failed"; failed=$((failed + 1)); rc=1
  fi
  node esbuild.mjs >/dev/null 2>&1  # vscode:prepublish left minified bundles: back to the dev build
fi
rm -rf "$logs"
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed passed, $failed failed"
exit $rc
