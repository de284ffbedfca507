#!/usr/bin/env bash
# Checks the systemd units in deploy/ with `systemd-analyze verify` (any message or a
# non-zero exit fails), pointing ExecStart at the binaries built here. When systemd-analyze
# is missing it installs Debian's `systemd` package (as root); when it cannot, it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/need.sh
need systemd-analyze systemd
cargo build --quiet -p orca-coordinator -p orca-worker
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shopt -s nullglob
units=(deploy/*.service)
if [ "${#units[@]}" -eq 0 ]; then
  echo "systemd-check.sh: FAILED: no deploy/*.service to check" >&2
  exit 1
fi
fail=0
for unit in "${units[@]}"; do
  name=$(basename "$unit")
  bin=$(sed -n 's|^ExecStart=/usr/local/bin/\([^ ]*\).*|\1|p' "$unit")
  if [ -z "$bin" ] || [ ! -x "target/debug/$bin" ] || [ -d "target/debug/$bin" ]; then
    echo "FAIL $name: ExecStart names no binary built here (${bin:-no ExecStart=/usr/local/bin/...})"
    fail=1
    continue
  fi
  # A template (name@.service) is checked as one instance of it.
  case "$name" in *@.service) name="${name%@.service}@check.service" ;; esac
  sed "s|^ExecStart=/usr/local/bin/|ExecStart=$(pwd)/target/debug/|" "$unit" >"$work/$name"
  rc=0
  out=$(systemd-analyze verify "$work/$name" 2>&1) || rc=$?
  if [ -n "$out" ] || [ "$rc" -ne 0 ]; then
    echo "FAIL $name (exit $rc):"
    echo "$out"
    fail=1
  else
    echo "ok   $name"
  fi
done
[ "$fail" -eq 0 ]
