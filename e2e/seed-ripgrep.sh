#!/bin/sh
# Seeds @vscode/ripgrep's download cache with Debian's rg, so code-server's nested install
# does not try GitHub (values for code-server 4.100.3).
set -eu
RG_PKG_VERSION="${RG_PKG_VERSION:-1.15.11}"; RG_TAG="${RG_TAG:-v13.0.0-10}"
CACHE="$(node -p 'require("os").tmpdir()')/vscode-ripgrep-cache-$RG_PKG_VERSION"
FILE="$CACHE/ripgrep-$RG_TAG-x86_64-unknown-linux-musl.tar.gz"
[ -s "$FILE" ] && exit 0
mkdir -p "$CACHE"; tmp="$(mktemp -d)"; cp "$(command -v rg)" "$tmp/rg"
tar czf "$FILE" -C "$tmp" rg; rm -rf "$tmp"
