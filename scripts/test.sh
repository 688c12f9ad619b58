#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, checks the libtorch-free
# evaluator build, then builds and runs every test once. Tests that need the real data in
# ../shared/data (or TOOLKIT_DATA_DIR) skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
echo "[test] eval/export-only build (no libtorch)"
cargo check --quiet --no-default-features --features eval --all-targets
echo "[test] full build and tests"
cargo test --no-fail-fast 2>&1
