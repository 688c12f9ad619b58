#!/usr/bin/env bash
# The quickstart: the real pipeline on a real multilingual model and real data, offline, on CPU.
#   setup -> import multilingual-e5-small -> train COPA task adapters with the standard, gu and
#   fun schedules -> export -> score XCOPA's eleven languages -> tables and plots.
# Re-running is cheap: finished runs, imports and exports are reused.
#   TOOLKIT_DATA_DIR=DIR  where copa/ and xcopa/ are (default ../shared/data, else downloaded)
#   METHODS="standard gu fun"  which schedules to run
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"

NEEDED="copa xcopa"
# shellcheck source=scripts/recipes/prepare.sh
source scripts/recipes/prepare.sh

runs=runs/quickstart
results=results/quickstart
report=reports/quickstart
run_dirs=()
for method in ${METHODS:-standard gu fun}; do
    echo "[quickstart] $method: train on English COPA"
    "$TOOLKIT" train --config scripts/configs/copa-e5.toml --schedule "$method" \
        --train-file "$TOOLKIT_DATA_DIR/copa/train.jsonl" --validation-file "$TOOLKIT_DATA_DIR/copa/val.jsonl" \
        --out "$runs/copa-$method"
    echo "[quickstart] $method: export"
    "$TOOLKIT" export --run "$runs/copa-$method" --no-lang-adapter --out "exports/quickstart/copa-$method"
    echo "[quickstart] $method: zero-shot XCOPA"
    "$TOOLKIT" eval --suite xcopa --models "exports/quickstart/copa-$method" --data-dir "$TOOLKIT_DATA_DIR" \
        --method "$method" --seed 42 --run-name "copa-$method" --out "$results/copa-$method.csv"
    run_dirs+=(--run-dir "$runs/copa-$method")
done

"$TOOLKIT" report "$results"/*.csv "${run_dirs[@]}" --out "$report"
echo
cat "$report/tables.md"
echo
echo "[quickstart] results: $results/  tables and plots: $report/  runs: $runs/"
