#!/usr/bin/env bash
# Build the AssemblyScript proxy-wasm fixture filters into <repo>/.cache/as/<name>.wasm.
# Idempotent: does nothing when the sources, lock file, flags and this script are unchanged.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$repo/.cache/as"
# --use abort=abort_proc_exit: proxy-runtime's abort logs at critical level then calls proc_exit.
ASC_FLAGS=(--use abort=abort_proc_exit -O3 --noColors)

command -v node >/dev/null || { echo "build.sh: node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "build.sh: npm not found" >&2; exit 1; }

cd "$here"
inputs_hash="$( { cat package.json package-lock.json build.sh; echo "${ASC_FLAGS[*]}"; node --version;
  for f in assembly/*.ts; do echo "$f"; cat "$f"; done; } | sha256sum | cut -d' ' -f1)"
stamp="$out/.inputs-sha256"
filters=()
for f in assembly/*.ts; do
  name="$(basename "$f" .ts)"
  [ "$name" = common ] || filters+=("$name")
done

up_to_date=1
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ] || up_to_date=0
for name in "${filters[@]}"; do [ -f "$out/$name.wasm" ] || up_to_date=0; done
if [ "$up_to_date" = 1 ]; then
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
rm -f "$stamp"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export ASC_FLAGS_STR="${ASC_FLAGS[*]}" TMP_OUT="$tmp"
# Compile in parallel; the AS201 usize warnings come from the runtime library and are expected.
printf '%s\n' "${filters[@]}" | xargs -P "$(nproc)" -I{} sh -c \
  'node_modules/.bin/asc "assembly/{}.ts" -b "$TMP_OUT/{}.wasm" $ASC_FLAGS_STR >"$TMP_OUT/{}.log" 2>&1 \
     || { cat "$TMP_OUT/{}.log" >&2; echo "build.sh: asc failed for {}" >&2; exit 255; }'
for name in "${filters[@]}"; do mv "$tmp/$name.wasm" "$out/$name.wasm"; done
echo "$inputs_hash" > "$stamp"
echo "build.sh: built ${#filters[@]} filters into $out"
