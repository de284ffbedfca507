#!/usr/bin/env bash
# Checks the systemd units in deploy/ with `systemd-analyze verify` (any message fails),
# pointing ExecStart at the binaries built here. Skipped when systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-check.sh: SKIPPED: systemd-analyze not installed"
  exit 0
fi
cargo build --quiet -p orca-coordinator -p orca-worker
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
for unit in deploy/*.service; do
  name=$(basename "$unit")
  bin=$(sed -n 's|^ExecStart=/usr/local/bin/||p' "$unit")
  sed "s|^ExecStart=/usr/local/bin/|ExecStart=$(pwd)/target/debug/|" "$unit" >"$work/$name"
  [ -x "target/debug/$bin" ] || { echo "FAIL $name: no binary $bin"; fail=1; continue; }
  out=$(systemd-analyze verify "$work/$name" 2>&1 || true)
  if [ -n "$out" ]; then echo "FAIL $name:"; echo "$out"; fail=1; else echo "ok   $name"; fi
done
[ "$fail" -eq 0 ]
