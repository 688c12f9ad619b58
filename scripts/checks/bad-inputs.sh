#!/usr/bin/env bash
# Feeds the toolkit's commands malformed inputs, one class at a time, and writes what the user
# sees into docs/bad-inputs.md: a table of input class, what was tried, exit code and the first
# line printed. Every input is built here, in a temporary folder, from the tiny test fixtures;
# nothing else is needed (no data sets, no network).
#
#   scripts/checks/bad-inputs.sh            # builds target/release/toolkit unless TOOLKIT is set
#   TOOLKIT=target/debug/toolkit scripts/checks/bad-inputs.sh
#   scripts/checks/bad-inputs.sh OUT.md     # write the table elsewhere
#
# Exit status: 1 if any command panicked (exit code 101) or accepted a bad input (exit code 0);
# the table is written either way.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"

OUT_MD=${1:-docs/bad-inputs.md}
build_toolkit
if ! "$TOOLKIT" train --help >/dev/null 2>&1; then
    echo "bad-inputs: $TOOLKIT is missing or has no train command (set TOOLKIT to a build with the default features)" >&2
    exit 1
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FIXTURES=$ROOT/tests/fixtures/parity

# ---- good inputs to damage -------------------------------------------------------------------

# The tiny BERT of the fixtures with a WordPiece vocabulary of its size ([CLS] etc. at the ids
# the fixtures use), so that training, export and eval take seconds.
MODEL=$WORK/model
mkdir -p "$MODEL"
cp "$FIXTURES/bert_stack_cls_flex/model/config.json" "$FIXTURES/bert_stack_cls_flex/model/model.safetensors" "$MODEL/"
for id in $(seq 0 119); do
    case $id in
        0) echo "[PAD]" ;; 100) echo "[UNK]" ;; 101) echo "[CLS]" ;; 102) echo "[SEP]" ;; 103) echo "[MASK]" ;;
        *) echo "w$id" ;;
    esac
done >"$MODEL/vocab.txt"
LANG_ADAPTER=$FIXTURES/bert_stack_cls_flex/lang

copa_line() {  # IDX LABEL
    printf '{"premise": "w10 w11 w12.", "choice1": "w13 w14.", "choice2": "w15 w16.", "question": "effect", "label": %s, "idx": %s}\n' "$2" "$1"
}
for i in 0 1 2 3 4 5 6 7; do copa_line "$i" $((i % 2)); done >"$WORK/copa.jsonl"

# A one-step COPA run, its export for two languages, a COPA suite over it and its results.
"$TOOLKIT" train --quiet --model "$MODEL" --lang-adapter "$LANG_ADAPTER" --task copa \
    --train-file "$WORK/copa.jsonl" --out "$WORK/run" --max-steps 1 --batch-size 4 --set max_length=16 >/dev/null
mkdir -p "$WORK/langs"
cp -r "$LANG_ADAPTER" "$WORK/langs/en"
cp -r "$LANG_ADAPTER" "$WORK/langs/de"
"$TOOLKIT" export --run "$WORK/run" --lang-adapters "$WORK/langs" --lang en,de --out "$WORK/export" >/dev/null
mkdir -p "$WORK/data"
cp "$WORK/copa.jsonl" "$WORK/data/en.jsonl"
cp "$WORK/copa.jsonl" "$WORK/data/de.jsonl"
cat >"$WORK/suite.toml" <<'EOF'
name = "tiny-copa"
description = "COPA-format items on the tiny model"
task = "copa"
source_language = "en"
languages = ["en", "de"]
split = "test"
metrics = ["accuracy"]
primary_metric = "accuracy"
[features]
max_length = 16
[data]
path = "{lang}.jsonl"
EOF
"$TOOLKIT" eval --suite "$WORK/suite.toml" --models "$WORK/export" --data-dir "$WORK/data" \
    --run-name tiny --out "$WORK/results.csv" >/dev/null 2>&1

# ---- the table -------------------------------------------------------------------------------

ROWS=()
FAILED=0

# try CLASS WHAT COMMAND...: runs COMMAND and keeps its exit code and the first non-empty line
# it printed (standard error, else standard output), with the temporary folder written $WORK.
try() {
    local class=$1 what=$2
    shift 2
    local output code=0 first
    output=$("$@" 2>&1 >"$WORK/stdout") || code=$?
    [ -n "$output" ] || output=$(cat "$WORK/stdout")
    first=$(printf '%s\n' "$output" | grep -v '^[[:space:]]*$' | head -n 1 | sed "s|$WORK|\$WORK|g; s/|/\\\\|/g" | cut -c1-300)
    if [ "$code" -eq 0 ] || [ "$code" -eq 101 ]; then
        FAILED=1
        echo "bad-inputs: $class ($what): exit code $code" >&2
    fi
    ROWS+=("| $class | $what | $code | \`$first\` |")
}

train_on() {  # TASK FILE [ARGS...]: a one-step run on FILE
    local task=$1 file=$2
    shift 2
    "$TOOLKIT" train --quiet --model "$MODEL" --lang-adapter "$LANG_ADAPTER" --task "$task" --train-file "$file" \
        --out "$WORK/out-$task" --max-steps 1 --batch-size 4 --set max_length=16 "$@"
}

eval_on() {  # SUITE EXPORT [ARGS...]
    local suite=$1 models=$2
    shift 2
    "$TOOLKIT" eval --suite "$suite" --models "$models" --data-dir "$WORK/data" --out "$WORK/r.csv" "$@"
}

# Data formats: one malformed record each.
printf '%s\n' '{"sentence1": "w10 w11", "sentence2": "w12", "gold_label": "entailment", "pairID": "1"}' \
    '{"sentence1": "w10", "sentence2": "w12", "gold_label": "entailment"' >"$WORK/mnli.jsonl"
try "MultiNLI JSON lines" "line 2 cut off mid-object" train_on nli "$WORK/mnli.jsonl"
printf '%s\n' '{"sentence1": "w10 w11", "sentence2": "w12", "gold_label": "maybe", "pairID": "1"}' >"$WORK/mnli-label.jsonl"
try "MultiNLI JSON lines" "gold_label \"maybe\"" train_on nli "$WORK/mnli-label.jsonl"
printf 'language\tgold_label\tsentence1\tsentence2\nen\tentailment\tw10 w11\tw12\nen\tneutral\tw10\n' >"$WORK/xnli.tsv"
try "XNLI TSV" "line 3 has 3 of the header's 4 fields" train_on nli "$WORK/xnli.tsv"
printf '{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "w10 w11 w12", "qas": [{"id": "q", "question": "w13", "answers": [{"text": "w11", "answer_start": 5}]}]}]}]}\n' >"$WORK/squad-start.json"
try "SQuAD JSON" "answer_start 5 does not point at the answer text" train_on qa "$WORK/squad-start.json"
head -c 60 "$WORK/squad-start.json" >"$WORK/squad-cut.json"
try "SQuAD JSON" "file cut off after 60 bytes" train_on qa "$WORK/squad-cut.json"
{ copa_line 0 0; copa_line 1 2; } >"$WORK/copa-label.jsonl"
try "COPA / XCOPA JSON lines" "label 2 on line 2" train_on copa "$WORK/copa-label.jsonl"
{ copa_line 0 0; echo '{"premise": "w10", "choice1": "w11", "question": "effect", "label": 0, "idx": 1}'; } >"$WORK/copa-field.jsonl"
try "COPA / XCOPA JSON lines" "no choice2 on line 2" train_on copa "$WORK/copa-field.jsonl"
printf '%s\n' '{"text": "w10 w11 w12"}' '{"txt": "w10"}' >"$WORK/text.jsonl"
try "text (JSON lines)" "line 2 has no text field" \
    "$TOOLKIT" train-lang --quiet --model "$MODEL" --text "$WORK/text.jsonl" --lang xx --out "$WORK/out-lang" --max-steps 1
printf 'w10 w11\n\xff\xfe w12\n' >"$WORK/text.txt"
try "text (plain)" "line 2 is not UTF-8" \
    "$TOOLKIT" train-lang --quiet --model "$MODEL" --text "$WORK/text.txt" --lang xx --out "$WORK/out-lang" --max-steps 1
try "data file" "train file does not exist" train_on copa "$WORK/missing.jsonl"

# Configurations and suites.
printf 'model = "%s"\ntask = "copa"\ntrain_file = "%s"\nout = "%s"\nepochz = 3\n' "$MODEL" "$WORK/copa.jsonl" "$WORK/out-cfg" >"$WORK/unknown-key.toml"
try "train config" "unknown key epochz" "$TOOLKIT" train --config "$WORK/unknown-key.toml"
printf 'model = "%s"\ntask = "copa"\ntrain_file = "%s"\nout = "%s"\nepochs = "three"\n' "$MODEL" "$WORK/copa.jsonl" "$WORK/out-cfg" >"$WORK/wrong-type.toml"
try "train config" "epochs = \"three\" (a string)" "$TOOLKIT" train --config "$WORK/wrong-type.toml"
sed 's/^split = "test"/split = "test"\nsplits = 2/' "$WORK/suite.toml" >"$WORK/suite-key.toml"
try "suite file" "unknown key splits" eval_on "$WORK/suite-key.toml" "$WORK/export"
sed 's/^languages = .*/languages = ["en", "de", "sw"]/' "$WORK/suite.toml" >"$WORK/suite-sw.toml"
cp "$WORK/copa.jsonl" "$WORK/data/sw.jsonl"
try "suite languages" "the suite names sw, the export has no sw model" eval_on "$WORK/suite-sw.toml" "$WORK/export"
rm "$WORK/data/de.jsonl"
try "suite languages" "no data file for de" eval_on "$WORK/suite.toml" "$WORK/export"
cp "$WORK/copa.jsonl" "$WORK/data/de.jsonl"
try "suite languages" "--lang zz, not in the suite" eval_on "$WORK/suite.toml" "$WORK/export" --lang zz

# Model files.
try "adapter folder" "--task-adapter folder does not exist" \
    "$TOOLKIT" export --model "$MODEL" --task-adapter "$WORK/no-such-adapter" --no-lang-adapter --out "$WORK/x"
echo 'en = "no-such-lang"' >"$WORK/langs-missing.toml"
try "adapter folder" "a language adapter folder in the TOML does not exist" \
    "$TOOLKIT" export --run "$WORK/run" --lang-adapters "$WORK/langs-missing.toml" --lang en --out "$WORK/x"
mkdir -p "$WORK/model-cut"
cp "$MODEL/config.json" "$MODEL/vocab.txt" "$WORK/model-cut/"
head -c 5000 "$MODEL/model.safetensors" >"$WORK/model-cut/model.safetensors"
try "safetensors" "model.safetensors cut off at 5000 bytes" \
    "$TOOLKIT" export --model "$WORK/model-cut" --task-adapter "$WORK/run/best" --no-lang-adapter --out "$WORK/x"
printf 'garbage' >"$WORK/model-cut/model.safetensors"
try "safetensors" "model.safetensors holding 7 bytes of text" \
    "$TOOLKIT" export --model "$WORK/model-cut" --task-adapter "$WORK/run/best" --no-lang-adapter --out "$WORK/x"
# The same bytes, one tensor's shape swapped in the header.
mkdir -p "$WORK/lang-shape"
cp "$LANG_ADAPTER/adapter_config.json" "$WORK/lang-shape/"
python3 - "$LANG_ADAPTER/adapter.safetensors" "$WORK/lang-shape/adapter.safetensors" <<'EOF'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
name = "bert.encoder.layer.0.output.adapters.lang.adapter_down.0.weight"
header[name]["shape"] = header[name]["shape"][::-1]
text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
open(sys.argv[2], "wb").write(data[:8] + text + data[8 + n:])
EOF
echo 'en = "lang-shape"' >"$WORK/langs-shape.toml"
try "tensor shape" "a language adapter's adapter_down.0.weight stored as [32, 16], not [16, 32]" \
    "$TOOLKIT" export --run "$WORK/run" --lang-adapters "$WORK/langs-shape.toml" --lang en --out "$WORK/x"
printf '{"config": {"reduction_factor": "two"}}' >"$WORK/lang-shape/adapter_config.json"
try "adapter config" "adapter_config.json with reduction_factor \"two\"" \
    "$TOOLKIT" export --run "$WORK/run" --lang-adapters "$WORK/langs-shape.toml" --lang en --out "$WORK/x"

# Run folders, exports, results, predict inputs.
train_on copa "$WORK/copa.jsonl" >/dev/null
head -c 100 "$WORK/run/last/adapter.safetensors" >"$WORK/out-copa/last/adapter.safetensors"
try "checkpoint" "last/adapter.safetensors cut off at 100 bytes, the same run started again" \
    train_on copa "$WORK/copa.jsonl"
try "checkpoint" "that last/ exported as a task adapter" \
    "$TOOLKIT" export --model "$MODEL" --task-adapter "$WORK/out-copa/last" --no-lang-adapter --out "$WORK/x"
cp -r "$WORK/export" "$WORK/export-cut"
head -c 2000 "$WORK/export/de.onnx" >"$WORK/export-cut/de.onnx"
try "ONNX export" "de.onnx cut off at 2000 bytes" eval_on "$WORK/suite.toml" "$WORK/export-cut"
cp -r "$WORK/export" "$WORK/export-dots"
sed -i 's|"de.onnx"|"../de.onnx"|' "$WORK/export-dots/export.json"
try "export.json" "a model file named ../de.onnx" eval_on "$WORK/suite.toml" "$WORK/export-dots"
printf '{' >"$WORK/export-dots/export.json"
try "export.json" "export.json holding \"{\"" eval_on "$WORK/suite.toml" "$WORK/export-dots"
{ cat "$WORK/results.csv"; sed -n 2p "$WORK/results.csv" | sed 's/^\([^,]*,[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,\)[^,]*/\1not-a-number/'; } >"$WORK/bad-results.csv"
try "results CSV" "a row whose value is not-a-number" "$TOOLKIT" report --out "$WORK/report" "$WORK/bad-results.csv"
head -n 1 "$WORK/results.csv" | cut -d, -f1-3 >"$WORK/short-results.csv"
try "results CSV" "a header of 3 columns and no rows" "$TOOLKIT" report --out "$WORK/report" "$WORK/short-results.csv"
printf '%s\n' '{"text": "w10 w11", "choices": ' >"$WORK/predict.jsonl"
try "predict input" "line 1 cut off" \
    "$TOOLKIT" predict --model "$MODEL" --lang-adapter "$LANG_ADAPTER" --task-adapter "$WORK/run/best" \
    --input "$WORK/predict.jsonl" --device cpu

mkdir -p "$(dirname "$OUT_MD")"
{
    echo "# What bad input looks like"
    echo
    echo "Written by \`scripts/checks/bad-inputs.sh\`: each row is one malformed input, built from the tiny"
    echo "test fixtures and given to the real command line; the message is the first line the user"
    echo "sees (the temporary folder written \`\$WORK\`). Exit code 1 is an error with a message; a"
    echo "panic would be 101, and the script fails on one, as it does on a bad input accepted (0)."
    echo
    echo "| input class | what was tried | exit code | first line of what the user sees |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT_MD.tmp"
mv "$OUT_MD.tmp" "$OUT_MD"
echo "bad-inputs: ${#ROWS[@]} inputs, table in $OUT_MD"
exit "$FAILED"
