#!/usr/bin/env bash
# The paper's experiments with its own settings (Appendix B, Tables 3 and 4, from the configs in
# scripts/configs/): for every task, model, method and seed (4 seeds, as the paper), train the
# task adapter on English, export it with each target language's adapter swapped in, score the
# target languages, then write the tables. Runs that are complete are skipped; an interrupted
# training run resumes.
#
#   TASKS="qa nli copa"  MODELS="mbert xlmr"  METHODS="standard lpft gu fun rand"  SEEDS="1 2 3 4"
#   SUBSETS="1000 5000 10000"   # the reduced-data grid of Table 4 instead (qa, nli)
#   DRY_RUN=1                   # print each run's resolved settings and schedule only
#   TOOLKIT=BINARY              # default target/release/toolkit (scripts/setup.sh builds it if missing)
#
# Needs what the paper used on disk, relative to the repository root (README, "The paper's full
# setting"): data/ (scripts/download-data.sh data), models/bert-base-multilingual-cased,
# models/xlm-roberta-base, adapters/en-{mbert,xlmr} and adapters/{mbert,xlmr}/LANG. A GPU is
# advised: the main grid is hundreds of GPU hours.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"

[ -x "$TOOLKIT" ] || scripts/setup.sh

suites() {
    case $1 in
        qa) echo "xquad mlqa" ;;
        nli) echo xnli ;;
        copa) echo xcopa ;;
    esac
}

for task in ${TASKS:-qa nli copa}; do
    for model in ${MODELS:-mbert xlmr}; do
        config=scripts/configs/$task-$model.toml
        for subset in ${SUBSETS:-full}; do
            [ "$subset" != full ] && [ "$task" = copa ] && continue  # Table 4 has no COPA rows
            for method in ${METHODS:-standard lpft gu fun rand}; do
                for seed in ${SEEDS:-1 2 3 4}; do
                    name=$task-$model-$method-s$seed
                    args=(--config "$config" --schedule "$method" --seed "$seed")
                    if [ "$subset" != full ]; then
                        name=$task-$model-$method-n$subset-s$seed
                        args+=(--train-subset "$subset")
                    fi
                    args+=(--out "runs/paper/$name")
                    if [ -n "${DRY_RUN:-}" ]; then
                        echo "== $name"
                        "$TOOLKIT" train "${args[@]}" --dry-run
                        continue
                    fi
                    "$TOOLKIT" train "${args[@]}" --quiet
                    [ -f "exports/paper/$name/export.json" ] \
                        || "$TOOLKIT" export --run "runs/paper/$name" --lang-adapters "adapters/$model" --lang all \
                            --out "exports/paper/$name"
                    for suite in $(suites "$task"); do
                        out=results/paper/$name/$suite.csv
                        [ -f "$out" ] || "$TOOLKIT" eval --suite "$suite" --models "exports/paper/$name" --data-dir data \
                            --method "$method" --seed "$seed" --run-name "$name" --out "$out"
                    done
                done
            done
        done
    done
done
[ -n "${DRY_RUN:-}" ] && exit 0

for suite in xquad mlqa xnli xcopa; do
    shopt -s nullglob
    files=(results/paper/*/"$suite".csv)
    [ ${#files[@]} -gt 0 ] && "$TOOLKIT" report "${files[@]}" --out "reports/paper/$suite"
done
echo "[paper] tables in reports/paper/"
