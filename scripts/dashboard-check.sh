#!/usr/bin/env bash
# The terminal dashboard end to end in tmux (tests/tests/dashboard.rs, ignored by a plain
# `cargo test` because it needs tmux): installs tmux when missing (scripts/lib/need.sh), then
# runs the test against the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/need.sh
need tmux tmux
cargo build --quiet -p orca-coordinator -p orca-worker -p orca-cli
cargo test --quiet -p orca-e2e --test dashboard -- --ignored
