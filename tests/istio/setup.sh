#!/usr/bin/env bash
# Install Istio's published CRD schemas (compiled validators from @kubernetes-models/istio, pinned in
# package-lock.json) into tests/istio/node_modules. Idempotent: npm ci runs only when the lock changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v npm >/dev/null || { echo "setup.sh: npm not found" >&2; exit 1; }
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.lock-sha256 2>/dev/null)" != "$lock_hash" ]; then
  # The package declares node >= 22; its validators run on Debian's node 20 (checked by the tests).
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
  echo "$lock_hash" > node_modules/.lock-sha256
fi
