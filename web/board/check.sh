#!/usr/bin/env bash
# The committed bundle is exactly what the sources build: rebuild dist/, then fail on any
# difference (changed, removed or new files).
set -euo pipefail
cd "$(dirname "$0")"
node build.mjs
if ! git diff --exit-code --stat -- dist; then
  echo "web/board/check.sh: dist/ differs from what the sources build: run \`npm run build\` in web/board and commit dist/" >&2
  exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- dist)
if [[ -n "$untracked" ]]; then
  echo "web/board/check.sh: the build made files that are not committed:" >&2
  echo "$untracked" >&2
  exit 1
fi
echo "dist/ is reproducible from source"
