#!/usr/bin/env bash
# Checks the coordinator's /metrics with `promtool check metrics` (Debian's prometheus
# package, installed when missing): once at start-up, once after a job of 20 tasks ran on a
# noop worker. Any lint or parse message fails, and so do values that did not move.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/need.sh
need promtool prometheus
cargo build --quiet -p orca-coordinator -p orca-worker -p orca-cli
bin=target/debug
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/orca-coordinator" --listen 127.0.0.1:0 --addr-file "$work/addr" --db "$work/orca.db" \
  --http-listen 127.0.0.1:0 --http-addr-file "$work/http" 2>"$work/coordinator.log" &
pids+=($!)
for _ in $(seq 600); do [ -s "$work/http" ] && [ -s "$work/addr" ] && break; sleep 0.1; done
[ -s "$work/http" ] || { echo "metrics-check.sh: FAILED: the coordinator did not start"; cat "$work/coordinator.log"; exit 1; }
http=$(cat "$work/http")
export ORCA_COORDINATOR="http://$(cat "$work/addr")"

scrape() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())' \
    "http://$http/metrics" >"$1"
}
check() {
  local out rc=0
  out=$(promtool check metrics <"$1" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    echo "metrics-check.sh: FAILED: promtool on $2 (exit $rc):"
    echo "$out"
    exit 1
  fi
  echo "ok   promtool check metrics: $2 ($(grep -c '^orca_' "$1") samples)"
}
scrape "$work/start.txt"
check "$work/start.txt" "at start-up"

"$bin/orca-worker" --agent noop --slots 4 --name metrics-check 2>"$work/worker.log" &
pids+=($!)
job=$(seq 20 | sed 's/^/task /' | "$bin/orca" submit --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
timeout 120 "$bin/orca" wait "$job" >/dev/null
scrape "$work/after.txt"
check "$work/after.txt" "after a job"
grep -q '^orca_tasks{state="completed"} 20$' "$work/after.txt" || {
  echo "metrics-check.sh: FAILED: orca_tasks{state=\"completed\"} is not 20:"
  grep '^orca_tasks' "$work/after.txt"
  exit 1
}
grep -q '^orca_workers_connected 1$' "$work/after.txt" || { echo "metrics-check.sh: FAILED: no connected worker"; exit 1; }
echo "ok   values moved: 20 tasks completed, 1 worker connected"
