#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test of the workspace (unit,
# property, store and end-to-end tests that start the real binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
