#!/usr/bin/env bash
# CI for the TypeScript client (@pm-server/client): install from the lockfile, typecheck,
# regenerate the protobuf types and check they match the committed ones, build, and run the
# tests against a real pm-server.
#
# The tests need a built server and this script builds none: run `cargo build` in the
# repository root first (the tests then use target/debug/pm-server), or point PM_SERVER_BIN at
# a binary, e.g. `PM_SERVER_BIN=target/release/pm-server bash web/client/ci.sh`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# A relative PM_SERVER_BIN is relative to where the script was started.
if [[ -n "${PM_SERVER_BIN:-}" && "$PM_SERVER_BIN" != /* ]]; then
  export PM_SERVER_BIN="$PWD/$PM_SERVER_BIN"
fi
cd "$here"

if [[ -n "${PM_SERVER_BIN:-}" ]]; then
  bin="$PM_SERVER_BIN"
else
  bin="../../target/debug/pm-server"
fi
if [[ ! -x "$bin" ]]; then
  echo "web/client/ci.sh: no pm-server binary at $bin; run \`cargo build\` first or set PM_SERVER_BIN" >&2
  exit 1
fi

echo "--- npm ci"
npm ci --no-audit --no-fund

echo "--- typecheck"
npm run --silent typecheck

echo "--- generate (reproducible: src/gen must not change)"
npm run --silent generate
if [[ -n "$(git status --porcelain -- src/gen)" ]]; then
  git status --short -- src/gen >&2
  git --no-pager diff --stat -- src/gen >&2
  echo "web/client/ci.sh: src/gen differs from proto/: run \`npm run generate\` in web/client and commit" >&2
  exit 1
fi

echo "--- build"
npm run --silent build

echo "--- test"
npm test
