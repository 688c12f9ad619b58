#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, checks the libtorch-free
# evaluator build, then builds and runs every test once. Tests that need the real data in
# ../shared/data (or TOOLKIT_DATA_DIR) skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
# A real single-node Slurm for tests/sweep_slurm.rs (about 10 s; the test skips without it).
if ! command -v slurmctld >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing Slurm (slurmctld, slurmd, munge) for the sweep test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd >/dev/null
fi
echo "[test] eval/export-only build (no libtorch)"
cargo check --quiet --no-default-features --features eval --all-targets
echo "[test] full build and tests"
cargo test --no-fail-fast 2>&1
