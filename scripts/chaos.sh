#!/usr/bin/env bash
# The chaos run (docs/resilience.md; invariants 1-3 and 7-8 of docs/design.md): N tasks through one coordinator and W workers
# while the coordinator is SIGKILLed K times and workers M times, each restarted at once; then
# checks from the database, the agents' records and a WatchJob stream that nothing
# acknowledged was lost, nothing completed twice, dependents of failures were cancelled and
# no agent process was left behind. Prints the counts; exits non-zero on any violation.
#
#   scripts/chaos.sh --ci            5,000 tasks, 3 coordinator + 10 worker kills (debug build;
#                                    the default when CI=true)
#   scripts/chaos.sh                 full size: 100,000 tasks, 10 + 50 kills (release build)
#   scripts/chaos.sh --ci --postgres the coordinator on Postgres (a throwaway server from
#                                    scripts/postgres.sh, or ORCA_TEST_POSTGRES when set)
#   scripts/chaos.sh --ci --seed 7   any further flag goes to orca-chaos (later ones win);
#                                    see `target/debug/orca-chaos --help`
# --debug / --release choose the build profile (default: debug at CI size, release at full).
set -euo pipefail
cd "$(dirname "$0")/.."

size=full
if [ "${CI:-}" = true ]; then size=ci; fi
profile=
postgres=0
pass=()
for a in "$@"; do
  case "$a" in
    --ci) size=ci ;;
    --full) size=full ;;
    --release) profile=release ;;
    --debug) profile=debug ;;
    --postgres) postgres=1 ;;
    *) pass+=("$a") ;;
  esac
done
if [ -z "$profile" ]; then
  if [ "$size" = ci ]; then profile=debug; else profile=release; fi
fi
sized=()
if [ "$size" = ci ]; then
  sized=(--tasks 5000 --coordinator-kills 3 --worker-kills 10)
fi

build=(cargo build --quiet -p orca-coordinator -p orca-worker -p orca-bench)
if [ "$profile" = release ]; then build+=(--release); fi
echo "== chaos: building ($profile)" >&2
"${build[@]}"
if [ "$postgres" = 1 ]; then
  if [ -z "${ORCA_TEST_POSTGRES:-}" ]; then
    eval "$(scripts/postgres.sh start --durable)"
    trap 'scripts/postgres.sh stop "$ORCA_TEST_PGDATA"' EXIT
  fi
  export ORCA_TEST_POSTGRES ORCA_E2E_DB=postgres
  echo "== chaos: the coordinator on Postgres ($ORCA_TEST_POSTGRES)" >&2
fi
echo "== chaos: size $size: target/$profile/orca-chaos ${sized[*]} ${pass[*]}" >&2
"target/$profile/orca-chaos" "${sized[@]}" "${pass[@]}"
