#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark; arguments go to orca-bench
# (e.g. --json, --only e2e,latency, --tasks 20000). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orca-coordinator -p orca-worker -p orca-bench
exec target/release/orca-bench "$@"
