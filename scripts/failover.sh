#!/usr/bin/env bash
# The failover run at full size: two coordinators on one Postgres (a throwaway durable server
# from scripts/postgres.sh, or ORCA_TEST_POSTGRES), 4 noop workers given both URLs, 20,000
# tasks, the leader killed (-9) 5 times, each restarted as a standby. Checks: every
# acknowledged task completed, none twice, a WatchJob client following the leader saw each
# seq once and every completion. Prints the takeover times. CI runs the same test at 2,000
# tasks and 3 kills (tests/tests/failover.rs, in scripts/test.sh's Postgres pass).
#
#   scripts/failover.sh                       # 20,000 tasks, 5 kills
#   scripts/failover.sh --tasks N --kills K
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=20000
kills=5
while [ $# -gt 0 ]; do
  case "$1" in
    --tasks) tasks=$2; shift 2 ;;
    --kills) kills=$2; shift 2 ;;
    *) echo "failover.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "${ORCA_TEST_POSTGRES:-}" ]; then
  eval "$(scripts/postgres.sh start --durable)"
  trap 'scripts/postgres.sh stop "$ORCA_TEST_PGDATA"' EXIT
fi
export ORCA_TEST_POSTGRES ORCA_E2E_DB=postgres ORCA_FAILOVER_TASKS=$tasks ORCA_FAILOVER_KILLS=$kills
cargo build --quiet -p orca-coordinator -p orca-worker
cargo test --quiet -p orca-e2e --test failover failover_under_load -- --nocapture 2>&1 | grep -v "^$"
