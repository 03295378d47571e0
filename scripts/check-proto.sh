#!/usr/bin/env bash
# proto/ checks for CI: `buf lint` (buf.yaml) and `buf breaking` against the previous commit
# (or PROTO_BASE), so no change to the wire types silently breaks a deployed client. buf
# comes from the TypeScript client's npm dev dependencies (web/client).
set -euo pipefail
cd "$(dirname "$0")/.."

buf=web/client/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
    (cd web/client && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== buf lint"
"$buf" lint

base=${PROTO_BASE:-HEAD~1}
if git rev-parse --verify --quiet "${base}^{commit}" >/dev/null; then
    echo "== buf breaking against ${base}"
    # The older commit may predate buf.yaml: compare the proto/ tree itself.
    "$buf" breaking --against ".git#ref=${base},subdir=proto"
else
    echo "== buf breaking skipped: ${base} is not in this clone (a shallow clone?)"
fi
