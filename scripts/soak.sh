#!/usr/bin/env bash
# The soak (docs/resilience.md, "Soak: hostile calls beside a normal workload"): a normal
# workload against one release coordinator and noop workers, first alone, then beside a mix
# of hostile calls within the documented limits; prints submit-to-start p50/p99/max, the
# coordinator's peak RSS and every hostile call's code. Exits non-zero on an unexpected code,
# a stall, the coordinator dying or not exiting 0 on SIGTERM. Not part of CI.
#
#   scripts/soak.sh                      3 minutes (1.5 a phase)
#   scripts/soak.sh --quick              a ~30 s smoke run
#   scripts/soak.sh --minutes 10 --out soak.json
# Every flag goes to orca-soak (`target/release/orca-soak --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== soak: building (release)" >&2
cargo build --release --quiet -p orca-coordinator -p orca-worker -p orca-bench
exec target/release/orca-soak "$@"
