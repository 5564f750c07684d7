#!/usr/bin/env bash
# Build the AssemblyScript proxy-wasm fixture filters into <repo>/.cache/as/<name>.wasm.
# Idempotent and incremental: a filter is recompiled only when its source, common.ts, the lock
# file, the flags or this script changed (stamps in .cache/as/<name>.sha256).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$repo/.cache/as"
# --use abort=abort_proc_exit: proxy-runtime's abort logs at critical level then calls proc_exit.
ASC_FLAGS=(--use abort=abort_proc_exit -O3 --noColors)

command -v node >/dev/null || { echo "build.sh: node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "build.sh: npm not found" >&2; exit 1; }

cd "$here"
# Inputs every filter depends on; each filter's stamp also covers its own source.
common_hash="$( { cat package.json package-lock.json build.sh assembly/common.ts; echo "${ASC_FLAGS[*]}";
  node --version; } | sha256sum | cut -d' ' -f1)"
filters=()
for f in assembly/*.ts; do
  name="$(basename "$f" .ts)"
  [ "$name" = common ] || filters+=("$name")
done
stamp_of() { { echo "$common_hash"; cat "assembly/$1.ts"; } | sha256sum | cut -d' ' -f1; }

stale=()
for name in "${filters[@]}"; do
  if [ ! -f "$out/$name.wasm" ] || [ "$(cat "$out/$name.sha256" 2>/dev/null)" != "$(stamp_of "$name")" ]; then
    stale+=("$name")
  fi
done
if [ "${#stale[@]}" = 0 ]; then
  echo "build.sh: up to date (${#filters[@]} filters in $out)"
  exit 0
fi

# npm ci only when node_modules was not installed from this exact lock file.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.lock-sha256 2>/dev/null)" != "$lock_hash" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > node_modules/.lock-sha256
fi

mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export ASC_FLAGS_STR="${ASC_FLAGS[*]}" TMP_OUT="$tmp"
# Compile in parallel; the AS201 usize warnings come from the runtime library and are expected.
printf '%s\n' "${stale[@]}" | xargs -P "$(nproc)" -I{} sh -c \
  'node_modules/.bin/asc "assembly/{}.ts" -b "$TMP_OUT/{}.wasm" $ASC_FLAGS_STR >"$TMP_OUT/{}.log" 2>&1 \
     || { cat "$TMP_OUT/{}.log" >&2; echo "build.sh: asc failed for {}" >&2; exit 255; }'
for name in "${stale[@]}"; do
  mv "$tmp/$name.wasm" "$out/$name.wasm"
  stamp_of "$name" > "$out/$name.sha256"
done
echo "build.sh: built ${#stale[@]} of ${#filters[@]} filters into $out (${stale[*]})"
