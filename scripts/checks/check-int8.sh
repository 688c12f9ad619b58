#!/usr/bin/env bash
# Accuracy guard for `toolkit export --dtype int8` (issue 11) on real data: exports a trained
# COPA model and a trained QA model in fp32 and in int8, scores XCOPA (every language) and
# XQuAD (every language) with each, and prints per language the fp32 score, the int8 score and
# their difference, with how many items' predictions the int8 export changed (from the
# evaluator's predictions files). Fails when any |difference| exceeds MAX_DIFF points (default
# 0.5). Also
# prints how far the int8 logits are from the fp32 logits on real inputs (the first XCOPA and
# XQuAD language's first items, run through both models with the reference venv's onnxruntime),
# and in how many rows the fp32 margin between the top two is below twice the row's int8
# change: the decisions any quantisation of that size can flip (many on a near-chance model).
#
#   scripts/checks/check-int8.sh
#   COPA_RUN=runs/quickstart/copa-fun   a COPA training run (scripts/quickstart.sh writes these)
#   QA_RUN=runs/madx-xquad/task-only    a QA training run without language adapter
#                                       (scripts/recipes/madx-xquad.sh writes it)
#   QA_SUITE=xquad QA_DATA_DIR=$TOOLKIT_DATA_DIR   the XQuAD suite and its data folder; for the
#       madx-xquad run, its held-out articles: QA_SUITE=runs/madx-xquad/xquad-split/xquad-heldout.toml
#       QA_DATA_DIR=runs/madx-xquad/xquad-split
#   COPA_LANGS / QA_LANGS=ar,de,...     only these languages (default: all of the suite)
#   CHECKS="copa qa"                    which of the two to run (default both; one alone is a
#                                       partial check, and the output says so)
#   INT8_ACTIVATIONS=mixed|tensor       check `--int8-activations` exports of that kind (default
#                                       token); OUT then defaults to exports/int8-check-KIND
#   OUT=exports/int8-check  THREADS=2  MAX_DIFF=0.5
#   TOOLKIT=path/to/toolkit             use this binary, build nothing
#
# Exports and results already in OUT are reused (delete OUT to start over): each export is
# made once, each results CSV written once.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"

COPA_RUN=${COPA_RUN:-runs/quickstart/copa-fun}
QA_RUN=${QA_RUN:-runs/madx-xquad/task-only}
QA_SUITE=${QA_SUITE:-xquad}
QA_DATA_DIR=${QA_DATA_DIR:-$TOOLKIT_DATA_DIR}
INT8_ACTIVATIONS=${INT8_ACTIVATIONS:-token}
case $INT8_ACTIVATIONS in
    token) OUT=${OUT:-exports/int8-check} ;;
    mixed|tensor) OUT=${OUT:-exports/int8-check-$INT8_ACTIVATIONS} ;;
    *) printf 'check-int8: INT8_ACTIVATIONS must be token, mixed or tensor, not %s\n' "$INT8_ACTIVATIONS" >&2; exit 2 ;;
esac
THREADS=${THREADS:-2}
MAX_DIFF=${MAX_DIFF:-0.5}

say() { printf '[check-int8] %s\n' "$*"; }
die() { printf 'check-int8: %s\n' "$*" >&2; exit 1; }

read -ra checks <<<"${CHECKS:-copa qa}"
for check in "${checks[@]}"; do
    case $check in
        copa) run=$COPA_RUN ;;
        qa) run=$QA_RUN ;;
        *) die "CHECKS: unknown check \`$check' (copa, qa)" ;;
    esac
    [ -f "$run/best/adapter_config.json" ] || die "$run: no trained task adapter (expected $run/best/adapter_config.json)"
done
[ "${#checks[@]}" = 2 ] || say "partial check: only ${checks[*]}"
[ -n "$toolkit_given" ] || say "building $TOOLKIT (eval only)"
build_toolkit --quiet --no-default-features --features eval
mkdir -p "$OUT/results"

# score NAME RUN SUITE DATA_DIR LANGS: exports RUN in fp32 and int8 and scores both.
score() {
    local name=$1 run=$2 suite=$3 data=$4 langs=$5 dtype
    for dtype in fp32 int8; do
        local export=$OUT/$name-$dtype csv=$OUT/results/$name-$dtype.csv
        if [ ! -f "$export/export.json" ]; then
            say "$name: export $run ($dtype)"
            local options=(--dtype "$dtype")
            [ "$dtype" = fp32 ] || options+=(--int8-activations "$INT8_ACTIVATIONS")
            "$TOOLKIT" export --run "$run" --no-lang-adapter "${options[@]}" --out "$export" >/dev/null
        fi
        if [ ! -f "$csv" ]; then
            say "$name: score $suite ($dtype)"
            "$TOOLKIT" eval --suite "$suite" --models "$export" --data-dir "$data" ${langs:+--lang "$langs"} \
                --device cpu --threads "$THREADS" --run-name "$name-$dtype" --out "$csv" >/dev/null
        fi
    done
}
for check in "${checks[@]}"; do
    case $check in
        copa) score copa "$COPA_RUN" xcopa "$TOOLKIT_DATA_DIR" "${COPA_LANGS:-}" ;;
        qa) score qa "$QA_RUN" "$QA_SUITE" "$QA_DATA_DIR" "${QA_LANGS:-}" ;;
    esac
done

if [ -x "$REF_VENV/bin/python" ] && "$REF_VENV/bin/python" -c "import onnxruntime, tokenizers" 2>/dev/null; then
    say "int8 logits vs fp32 logits on real inputs"
    "$REF_VENV/bin/python" - "$OUT" "$TOOLKIT_DATA_DIR" "$THREADS" "${checks[@]}" <<'PY'
import glob, json, sys
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

out, data, threads, checks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def session(export):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # As the evaluator (src/runtime.rs): with this fusion's other float rounding, int8 decides
    # up to 18 of a language's 500 XCOPA items differently.
    options.add_session_config_entry("optimization.disable_specified_optimizers", "SkipLayerNormFusion")
    model = json.load(open(f"{export}/export.json"))["models"][0]["file"]
    return ort.InferenceSession(f"{export}/{model}", options, providers=["CPUExecutionProvider"])

def compare(name, batches):
    """Runs both exports of NAME on (encodings, shape) batches, right-padded."""
    fp32, int8 = session(f"{out}/{name}-fp32"), session(f"{out}/{name}-int8")
    names = {i.name for i in fp32.get_inputs()}
    diffs, largest, agree, rows, close = [], 0.0, 0, 0, 0
    for encodings, shape in batches:
        n = max(len(e.ids) for e in encodings)
        columns = {"input_ids": [e.ids + [0] * (n - len(e.ids)) for e in encodings],
                   "attention_mask": [[1] * len(e.ids) + [0] * (n - len(e.ids)) for e in encodings],
                   "token_type_ids": [e.type_ids + [0] * (n - len(e.ids)) for e in encodings]}
        inputs = {k: np.array(v, dtype=np.int64).reshape(shape) for k, v in columns.items() if k in names}
        for a, b in zip(fp32.run(None, inputs), int8.run(None, inputs)):
            diffs.append(np.abs(a - b).ravel())
            largest = max(largest, float(np.abs(a).max()))
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            rows += a.shape[0]
            # A row's decision can flip only where its fp32 margin between the top two is
            # below twice its largest int8 change.
            top2 = np.sort(a, axis=-1)[..., -2:]
            close += int((top2[..., 1] - top2[..., 0] < 2 * np.abs(a - b).max(-1)).sum())
    d = np.concatenate(diffs)
    print(f"{name}: {rows} output rows, |int8 - fp32| max {d.max():.4f}, mean {d.mean():.4f} "
          f"(largest |fp32 logit| {largest:.2f}); same argmax in {100 * agree / rows:.1f}%; "
          f"{close} rows with a fp32 top-two margin below twice their largest int8 change")

def copa():
    """The first XCOPA language's first 128 items, 16 a batch, as the evaluator pairs them
    (src/features/copa.rs): "premise What was the cause/effect?" with each choice."""
    tok = Tokenizer.from_file(f"{out}/copa-fp32/tokenizer.json")
    tok.no_truncation()
    items = [json.loads(l) for l in open(sorted(glob.glob(f"{data}/xcopa/*/test.*.jsonl"))[0])][:128]
    chunks = [items[i:i + 16] for i in range(0, len(items), 16)]
    context = lambda it: f"{it['premise']} What was the {it['question']}?"
    compare("copa", [([tok.encode(context(it), it[c]) for it in chunk for c in ("choice1", "choice2")], (len(chunk), 2, -1))
                     for chunk in chunks])

def qa():
    """Question + context of the first XQuAD language's first 64 questions, cut at 384 tokens."""
    tok = Tokenizer.from_file(f"{out}/qa-fp32/tokenizer.json")
    tok.enable_truncation(384, strategy="only_second")
    squad = json.load(open(sorted(glob.glob(f"{data}/xquad/xquad.*.json"))[0]))
    pairs = [(qa["question"], p["context"]) for art in squad["data"] for p in art["paragraphs"] for qa in p["qas"]][:64]
    compare("qa", [([tok.encode(q, c) for q, c in pairs[i:i + 8]], (len(pairs[i:i + 8]), -1)) for i in range(0, len(pairs), 8)])

for check in checks:
    {"copa": copa, "qa": qa}[check]()
PY
else
    say "no $REF_VENV with onnxruntime and tokenizers: int8 logits vs fp32 not compared"
fi

say "per language: fp32, int8, int8 - fp32 (points)"
python3 - "$OUT/results" "$MAX_DIFF" "${checks[@]}" <<'PY'
import csv, json, os, sys
results, max_diff, checks = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
worst, failed = 0.0, []

def changed(name, lang):
    """Items whose prediction differs between the fp32 and the int8 export, and all items
    (from the evaluator's predictions beside each results CSV); None before they existed."""
    files = [f"{results}/{name}-{dtype}.predictions/{lang}.json" for dtype in ("fp32", "int8")]
    if not all(os.path.isfile(f) for f in files):
        return None
    fp32, int8 = (json.load(open(f)) for f in files)
    return sum(fp32[k] != int8.get(k) for k in fp32), len(fp32)

for name, metrics in (("copa", ["accuracy"]), ("qa", ["f1", "exact_match"])):
    if name not in checks:
        continue
    score = {}
    for dtype in ("fp32", "int8"):
        for row in csv.DictReader(open(f"{results}/{name}-{dtype}.csv")):
            score[dtype, row["language"], row["metric"]] = float(row["value"])
    langs = [l for (d, l, m) in score if d == "fp32" and m == metrics[0]]
    print(f"\n{name}: " + "  ".join(f"{m:>26}" for m in metrics) + "  predictions changed")
    print(f"{'lang':<8}" + "  ".join(f"{'fp32':>8} {'int8':>8} {'diff':>8}" for _ in metrics))
    for lang in langs:
        cells = []
        for m in metrics:
            a, b = score["fp32", lang, m], score["int8", lang, m]
            cells.append(f"{a:8.2f} {b:8.2f} {b - a:+8.2f}")
            if lang not in ("avg", "lowest"):
                worst = max(worst, abs(b - a))
                if abs(b - a) > max_diff:
                    failed.append(f"{name} {lang} {m}: {b - a:+.2f}")
        flips = changed(name, lang) if lang not in ("avg", "lowest") else None
        print(f"{lang:<8}" + "  ".join(cells) + (f"  {flips[0]:>5} of {flips[1]}" if flips else ""))
print(f"\nlargest |int8 - fp32|: {worst:.2f} points (limit {max_diff})")
if failed:
    print("FAILED: " + "; ".join(failed))
    sys.exit(1)
print("ok")
PY
