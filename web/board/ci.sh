#!/usr/bin/env bash
# CI for the board page (web/board): Chromium from Debian's packages if missing (no browser
# download), npm ci, typecheck, the committed bundle rebuilt and compared (check.sh), then the
# browser tests against a real pm-server.
#
# It builds no server: run `cargo build` in the repository root first (the tests then use
# target/debug/pm-server), or point PM_SERVER_BIN at a binary, e.g.
#   cargo build --bin pm-server && bash web/board/ci.sh
#   PM_SERVER_BIN=target/release/pm-server bash web/board/ci.sh
# CHROMIUM_BIN overrides /usr/bin/chromium. Installing Chromium needs root (as CI runs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# A relative PM_SERVER_BIN is relative to where the script was started.
if [[ -n "${PM_SERVER_BIN:-}" && "$PM_SERVER_BIN" != /* ]]; then
  export PM_SERVER_BIN="$PWD/$PM_SERVER_BIN"
fi
cd "$here"
bin="${PM_SERVER_BIN:-../../target/debug/pm-server}"
if [[ ! -x "$bin" ]]; then
  echo "web/board/ci.sh: no pm-server binary at $bin; run \`cargo build\` first or set PM_SERVER_BIN" >&2
  exit 1
fi

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  echo "--- apt-get install chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$chromium" --version

echo "--- npm ci"
# The board bundles web/client from its TypeScript sources and takes the client's one runtime
# dependency (@bufbuild/protobuf, same exact version) from its own lockfile, so web/client
# needs no install of its own here.
npm ci --no-audit --no-fund

echo "--- typecheck"
npm run --silent typecheck

echo "--- bundle reproducible from source"
bash check.sh

echo "--- browser tests"
npm test
