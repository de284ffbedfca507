#!/usr/bin/env bash
# The web dashboard in a real headless browser (tests/tests/web.rs, the tests ignored by a
# plain `cargo test` because they need Chromium): installs Debian's chromium and
# chromium-driver when missing (scripts/lib/need.sh), then runs them against the real
# binaries. Screenshots and the page's figures land in target/web-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/need.sh
need chromium chromium
need chromedriver chromium-driver
cargo build --quiet -p orca-coordinator -p orca-worker
cargo test --quiet -p orca-e2e --test web -- --ignored --nocapture --test-threads 1
ls target/web-screenshots
