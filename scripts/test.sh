#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test of the workspace (unit,
# property, store and end-to-end tests that start the real binaries), then the end-to-end
# tests again with the coordinator on Postgres.
#
# Postgres: a throwaway server from scripts/postgres.sh (installed from Debian's packages
# when missing), stopped at the end. To use a server of your own instead, set
# ORCA_TEST_POSTGRES to a URL whose user may create databases (and ORCA_TEST_PGDATA to its
# data directory for the tests that stop and start it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
if [ -z "${ORCA_TEST_POSTGRES:-}" ]; then
  eval "$(scripts/postgres.sh start)"
  trap 'scripts/postgres.sh stop "$ORCA_TEST_PGDATA"' EXIT
fi
export ORCA_TEST_POSTGRES ORCA_TEST_PGDATA
# The store's behaviour suite runs on both backends here; the end-to-end tests on SQLite.
cargo test --workspace
echo "== the end-to-end tests on Postgres"
ORCA_E2E_DB=postgres cargo test -p orca-e2e
