#!/usr/bin/env bash
# Regenerate tests/fixtures/ (parity cases + mBERT tokenization reference) with
# the Python reference stack (torch + transformers + adapters).
#
#   scripts/make-fixtures.sh                 # creates/uses .venv-ref at the repo root
#   REF_VENV=/path/to/venv scripts/make-fixtures.sh
#                                            # reuse an existing venv that already has
#                                            # scripts/reference/requirements.txt installed
#   scripts/make-fixtures.sh --only tokenization   # extra args go to make_fixtures.py
#   scripts/make-fixtures.sh --verify              # only re-check the existing fixtures
#
# PYTHON selects the interpreter used to create .venv-ref (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/reference/requirements.txt"

if [[ -n "${REF_VENV:-}" ]]; then
    VENV="$REF_VENV"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "make-fixtures: REF_VENV=$VENV has no bin/python" >&2
        exit 1
    fi
else
    VENV="$ROOT/.venv-ref"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "make-fixtures: creating $VENV"
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
fi

cd "$ROOT"
exec "$VENV/bin/python" "$ROOT/scripts/make_fixtures.py" "$@"
