#!/usr/bin/env bash
# The whole MAD-X pipeline, offline, on the default model (multilingual-e5-small), scored on
# XQuAD articles no stage ever saw:
#   1. split: XQuAD's 48 articles (the same in every language file, in the same order) into
#      articles 0-23 (training) and 24-47 (scored), as scripts/recipes/repro.sh does;
#   2. `toolkit train-lang`: a language adapter (seq_bn_inv, reduction factor 2) for English
#      and every XQuAD language, by MLM on the paragraphs of articles 0-23 in that language
#      (held-out perplexity on 10% of those paragraphs, kept out of its training);
#   3. `toolkit train --lang-adapter`: a QA task adapter on the English adapter, on the English
#      questions of articles 0-23;
#   4. `toolkit export --lang-adapters --lang all`: one model per language, its own language
#      adapter swapped in under the task adapter; `toolkit eval` on articles 24-47;
#   5. the same QA training, export and eval without language adapters, for comparison;
#   6. `toolkit report`: both rows in reports/madx-xquad/tables.md (per language).
# Small defaults, so that it finishes well under an hour on 2 cores; the paper's language
# adapters train far longer (up to 100 epochs or 24 hours on Wikipedia), so these numbers show
# that the pipeline works, not what MAD-X gains at full scale.
#   LANG_STEPS=40 (MLM updates per language; each language has ~150 blocks of 128 tokens)
#   LANG_BATCH=8  LANG_MAX_LENGTH=128  LANG_LR=5e-4 (the paper's 1e-4 is for 100 epochs)
#   LANGS="en ar de el es hi ro ru th tr vi zh" (en is needed: the task adapter trains on it)
#   QA_EPOCHS=1 (each epoch is ~600 windows of 384 tokens)  QA_STEPS (stop the QA training
#   sooner: a smoke test)  SEED=1  THREADS=2
#   TOOLKIT_DATA_DIR=DIR (with xquad/; else it is downloaded into data/)
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
NEEDED="xquad"
# shellcheck source=scripts/recipes/prepare.sh
source scripts/recipes/prepare.sh

read -ra langs <<<"${LANGS:-en ar de el es hi ro ru th tr vi zh}"
SEED=${SEED:-1}
THREADS=${THREADS:-2}
case " ${langs[*]} " in
    *" en "*) ;;
    *) echo "madx-xquad: LANGS must include en (the QA task adapter trains on the English adapter)" >&2; exit 2 ;;
esac
model=models/multilingual-e5-small
out=runs/madx-xquad
results=results/madx-xquad
split=$out/xquad-split
mkdir -p "$results"

# 1. Articles 0-23: QA training questions (English) and MLM text (every language); articles
# 24-47: the scored suite.
python3 scripts/recipes/xquad_split.py "$TOOLKIT_DATA_DIR/xquad" "$split" "${langs[@]}"

# 2. Language adapters; lang-adapters.toml (paths relative to it) lists them for export.
: > "$out/lang-adapters.toml"
for lang in "${langs[@]}"; do
    "$TOOLKIT" train-lang --quiet --model "$model" --text "$split/text/$lang.txt" --validation-fraction 0.1 \
        --lang "$lang" --out "$out/lang-$lang" --max-steps "${LANG_STEPS:-40}" --batch-size "${LANG_BATCH:-8}" \
        --max-length "${LANG_MAX_LENGTH:-128}" --lr "${LANG_LR:-5e-4}" --seed "$SEED" --threads "$THREADS" \
        --eval-every "${LANG_STEPS:-40}"
    echo "$lang = \"lang-$lang/adapter\"" >> "$out/lang-adapters.toml"  # relative to the file
    echo "[madx-xquad] $lang: held-out perplexity $(awk -F, 'NR > 1 && $7 != "" { p = p (p ? " -> " : "") $7 } END { print p }' "$out/lang-$lang/metrics.csv")"
done

# 3-5. The QA task adapter with the English language adapter (MAD-X) and without (baseline).
qa() {  # NAME [train options...]
    local name=$1
    shift
    "$TOOLKIT" train --model "$model" --task qa --seed "$SEED" --quiet --train-file "$split/xquad/train.en.json" \
        --out "$out/$name" --epochs "${QA_EPOCHS:-1}" --batch-size 16 --lr 5e-4 --threads "$THREADS" \
        --set max_length=384 ${QA_STEPS:+--max-steps "$QA_STEPS"} "$@"
}
score() {  # NAME
    "$TOOLKIT" eval --suite "$split/xquad-heldout.toml" --models "exports/$out/$1" --data-dir "$split" --method "$1" \
        --seed "$SEED" --run-name "$1-s$SEED" --out "$results/$1-s$SEED.csv"
}
qa madx --lang-adapter "$out/lang-en/adapter"
"$TOOLKIT" export --run "$out/madx" --lang-adapters "$out/lang-adapters.toml" --lang all --out "exports/$out/madx"
score madx
qa task-only
"$TOOLKIT" export --run "$out/task-only" --no-lang-adapter --out "exports/$out/task-only"
score task-only

# 6. Both, per language.
"$TOOLKIT" report "$results"/madx-s"$SEED".csv "$results"/task-only-s"$SEED".csv --out reports/madx-xquad
cat reports/madx-xquad/tables.md
