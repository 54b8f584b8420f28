#!/usr/bin/env bash
# Runs every test: the server's (pytest), the client/Exp 3 integration tests against a real
# server (node --test), the native codec's. Installs what it needs first (scripts/setup.sh).
# Ends with one line "N passed, N failed" summing all runners.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
logs=$(mktemp -d)
rc=0

echo "== server (pytest)"
(cd server && PYTHONPATH=. ../.venv/bin/python -m pytest tests -q -p no:cacheprovider) 2>&1 | tee "$logs/pytest.log" || rc=1

echo "== client, Exp 3 and debug adapter (node --test, real servers on the CPU)"
(node esbuild.mjs --tests >/dev/null && node --test --test-concurrency=1 out/test/) 2>&1 | tee "$logs/node.log" || rc=1

if [ -f native/package.json ]; then
  echo "== native tensor codec (node --test)"
  # test:ci fails when the addon did not build (plain `npm test` would fall back and skip)
  (cd native && npm run --silent test:ci) 2>&1 | tee "$logs/native.log" || rc=1
fi

echo "== VS Code extension (code-server 4.100.3 + headless chromium: extension-host tests, UI run, .vsix)"
bash e2e/run.sh 2>&1 | tee "$logs/e2e.log" || rc=1

# Sum the runners' own closing lines.
passed=0; failed=0
p=$(grep -Eo '[0-9]+ passed' "$logs/pytest.log" | tail -1 | grep -Eo '[0-9]+'); passed=$((passed + ${p:-0}))
f=$(grep -Eo '[0-9]+ (failed|error)' "$logs/pytest.log" | tail -1 | grep -Eo '[0-9]+'); failed=$((failed + ${f:-0}))
for log in "$logs/node.log" "$logs/native.log"; do
  [ -f "$log" ] || continue
  p=$(grep -E '^# pass ' "$log" | tail -1 | grep -Eo '[0-9]+'); passed=$((passed + ${p:-0}))
  f=$(grep -E '^# fail ' "$log" | tail -1 | grep -Eo '[0-9]+'); failed=$((failed + ${f:-0}))
done
l=$(grep -Eo '^[0-9]+ passed, [0-9]+ failed' "$logs/e2e.log" 2>/dev/null | tail -1)
if [ -n "$l" ]; then passed=$((passed + $(echo "$l" | cut -d' ' -f1))); failed=$((failed + $(echo "$l" | cut -d' ' -f3))); else failed=$((failed + 1)); fi
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
rm -rf "$logs"
echo "$passed passed, $failed failed"
exit $rc
