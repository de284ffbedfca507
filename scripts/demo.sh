#!/usr/bin/env bash
# Orca's main job on one machine: a coordinator on an embedded SQLite file, three local
# workers, and the orchestrator guide's sample session (client/examples/quickstart.rs; the
# guide is the API Orca keeps from the system it replaces, see docs/design.md).
# The workers run scripts/demo-agent.sh; with ORCA_DEMO_AGENT=claude they run Claude Code.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
echo "building (the first build takes a few minutes)..." >&2
cargo build --quiet -p orca-coordinator -p orca-worker -p orca-cli -p orca-client --bins --examples
work=$(mktemp -d "${TMPDIR:-/tmp}/orca-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
target/debug/orca-coordinator --listen 127.0.0.1:0 --db "$work/orca.db" --addr-file "$work/addr" 2>"$work/coordinator.log" &
pids+=($!)
for _ in $(seq 1 1000); do [ -s "$work/addr" ] && break; sleep 0.01; done
[ -s "$work/addr" ] || { cat "$work/coordinator.log" >&2; exit 1; }
export ORCA_COORDINATOR="http://$(cat "$work/addr")"
if [ "${ORCA_DEMO_AGENT:-}" = claude ]; then
  agent=(--agent claude)
else
  agent=(--agent command --agent-command "$root/scripts/demo-agent.sh")
fi
for i in 1 2 3; do
  target/debug/orca-worker --coordinator "$ORCA_COORDINATOR" --slots 2 --name "demo-worker-$i" \
    --work-dir "$work/worker-$i" "${agent[@]}" 2>"$work/worker-$i.log" &
  pids+=($!)
done
echo "coordinator at $ORCA_COORDINATOR (database $work/orca.db), 3 workers" >&2
target/debug/examples/quickstart
echo >&2
echo "the same job from the CLI: ORCA_COORDINATOR=$ORCA_COORDINATOR target/debug/orca jobs" >&2
target/debug/orca jobs
