#!/usr/bin/env bash
# The longer recipe behind the README's results: the quickstart's COPA -> XCOPA comparison of
# schedules over several seeds (mean ± std), and a QA variant on XQuAD with no test item seen
# in training: the task adapter trains on the English text of the first half of XQuAD's 48
# articles and is scored on the other half in all twelve languages.
#   SEEDS="1 2 3 4" (4, as the paper)  METHODS="standard gu fun"  QA_SEEDS="$SEEDS"  QA_METHODS="standard fun"  TOOLKIT_DATA_DIR=DIR
#   QA_EPOCHS=2 (each QA epoch is ~600 windows of 384 tokens: minutes per epoch on 2 cores)
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
NEEDED="copa xcopa xquad"
# shellcheck source=scripts/recipes/prepare.sh
source scripts/recipes/prepare.sh

out=runs/repro
results=results/repro
run_dirs=()
for seed in ${SEEDS:-1 2 3 4}; do
    for method in ${METHODS:-standard gu fun}; do
        run=$out/copa-$method-s$seed
        "$TOOLKIT" train --config scripts/configs/copa-e5.toml --schedule "$method" --seed "$seed" --quiet \
            --train-file "$TOOLKIT_DATA_DIR/copa/train.jsonl" --validation-file "$TOOLKIT_DATA_DIR/copa/val.jsonl" --out "$run"
        "$TOOLKIT" export --run "$run" --no-lang-adapter --out "exports/$run"
        "$TOOLKIT" eval --suite xcopa --models "exports/$run" --data-dir "$TOOLKIT_DATA_DIR" --method "$method" --seed "$seed" \
            --run-name "copa-$method-s$seed" --out "$results/copa-$method-s$seed.csv"
        run_dirs+=(--run-dir "$run")
    done
done

# XQuAD split by article: training on articles 0-23, scoring 24-47.
split=$out/xquad-split
python3 scripts/recipes/xquad_split.py "$TOOLKIT_DATA_DIR/xquad" "$split"
for seed in ${QA_SEEDS:-${SEEDS:-1 2 3 4}}; do
    for method in ${QA_METHODS:-standard fun}; do
        run=$out/xquad-$method-s$seed
        "$TOOLKIT" train --model models/multilingual-e5-small --task qa --schedule "$method" --seed "$seed" --quiet \
            --train-file "$split/xquad/train.en.json" --out "$run" --epochs "${QA_EPOCHS:-2}" --batch-size 16 \
            --lr 5e-4 --unfreeze-every 10 --threads 2 --set max_length=384
        "$TOOLKIT" export --run "$run" --no-lang-adapter --out "exports/$run"
        "$TOOLKIT" eval --suite "$split/xquad-heldout.toml" --models "exports/$run" --data-dir "$split" --method "$method" \
            --seed "$seed" --run-name "xquad-$method-s$seed" --out "$results/xquad-$method-s$seed.csv"
    done
done

"$TOOLKIT" report "$results"/*.csv "${run_dirs[@]}" --out reports/repro
cat reports/repro/tables.md
