#!/usr/bin/env bash
# Benchmark of `toolkit export` on an mBERT-sized model (random weights, the real mBERT config
# and vocabulary): export time for one and for 11 languages, and the disk size of the
# 11-language export against one full single-language model. Prints a table.
#
#   scripts/bench/bench-export.sh
#
# Environment (relative paths are taken from the repository root):
#   REF_VENV          Python venv with torch, transformers and adapters
#                     (scripts/fixtures/requirements.txt), used to write the synthetic checkpoint
#                     in AdapterHub format [default: .venv-ref]
#   TOOLKIT_DATA_DIR  the data folder with vocab/bert-base-multilingual-cased [default: ../shared/data]
#   LANG_RF           reduction factor of the language adapters [default: 2, as MAD-X]
#   DTYPE             fp32 or fp16 [default: fp32]
#   WORK              scratch folder [default: a new temporary folder, removed at the end]
#   TOOLKIT           a toolkit binary to use instead of building target/release/toolkit
set -euo pipefail
shopt -s inherit_errexit
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh" --old-data-dir

MBERT="$TOOLKIT_DATA_DIR/vocab/bert-base-multilingual-cased"
LANG_RF="${LANG_RF:-2}"
DTYPE="${DTYPE:-fp32}"
LANGS=(et ht id it qu sw ta th tr vi zh)   # the 11 XCOPA target languages

require_ref_venv bench-export
if [[ ! -f "$MBERT/bert_config.json" || ! -f "$MBERT/vocab.txt" ]]; then
    echo "bench-export: $MBERT lacks bert_config.json / vocab.txt; set TOOLKIT_DATA_DIR" >&2
    exit 1
fi
if [[ -z "${WORK:-}" ]]; then
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
fi
build_toolkit --no-default-features --features eval --quiet

echo "bench-export: writing the synthetic checkpoint to $WORK (language adapters: reduction factor $LANG_RF)"
"$REF_VENV/bin/python" - "$MBERT" "$WORK" "$LANG_RF" "${LANGS[@]}" <<'EOF'
import json, shutil, sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification
import adapters
from adapters import SeqBnConfig, SeqBnInvConfig

mbert, work, lang_rf, langs = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
torch.manual_seed(0)
raw = json.loads((mbert / "bert_config.json").read_text())
config = BertConfig(**{k: v for k, v in raw.items() if not k.startswith("pooler_") and k != "directionality"}, num_labels=2)
model = BertForSequenceClassification(config).eval()
adapters.init(model)
(work / "model").mkdir(parents=True, exist_ok=True)
model.save_pretrained(work / "model", safe_serialization=True)
shutil.copy(mbert / "vocab.txt", work / "model" / "vocab.txt")
(work / "model" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
for lang in langs:
    model.add_adapter(lang, config=SeqBnInvConfig(reduction_factor=lang_rf))
    (work / "langs" / lang).mkdir(parents=True, exist_ok=True)
    model.save_adapter(str(work / "langs" / lang), lang, with_head=False, use_safetensors=True)
model.add_adapter("copa", config=SeqBnConfig(reduction_factor=16))
(work / "task").mkdir(parents=True, exist_ok=True)
model.save_adapter(str(work / "task"), "copa", with_head=False, use_safetensors=True)  # the head is in model/
EOF

export_time() {  # LANG_SPEC OUT [FLAGS...] -> prints seconds
    local start end spec=$1 out=$2
    shift 2
    start=$(date +%s.%N)
    "$TOOLKIT" export --model "$WORK/model" --task-adapter "$WORK/task" --lang-adapters "$WORK/langs" \
        --lang "$spec" --dtype "$DTYPE" --out "$out" "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

one_s=$(export_time th "$WORK/export-th")
all_s=$(export_time all "$WORK/export-all")
int8_s=$(export_time all "$WORK/export-all-int8" --int8-lang-adapters)
size() { du -sb "$1" | cut -f1; }
model_b=$(size "$WORK/model/model.safetensors")
lang_b=$(size "$WORK/langs/th/adapter.safetensors")
one_b=$(size "$WORK/export-th")
all_b=$(size "$WORK/export-all")
int8_b=$(size "$WORK/export-all-int8")
n=${#LANGS[@]}

"$REF_VENV/bin/python" - "$one_s" "$all_s" "$int8_s" "$one_b" "$all_b" "$int8_b" "$model_b" "$lang_b" "$n" "$DTYPE" "$LANG_RF" <<'EOF'
import sys
one_s, all_s, int8_s = map(float, sys.argv[1:4])
one_b, all_b, int8_b, model_b, lang_b, n = map(int, sys.argv[4:10])
dtype, rf = sys.argv[10], sys.argv[11]
mib = lambda b: b / 2**20
# Even with perfect sharing, n languages need the base once plus n language adapters.
floor = (model_b + n * lang_b) / (model_b + lang_b)
ratio, int8_ratio = all_b / one_b, int8_b / one_b
verdict = lambda r: "PASS" if r <= 1.15 else "MISS"
print(f"toolkit export, mBERT-sized (random weights), {dtype}, language adapters rf {rf}")
print(f"  base checkpoint              {mib(model_b):9.1f} MiB")
print(f"  one language adapter         {mib(lang_b):9.1f} MiB")
print(f"  export, 1 language           {mib(one_b):9.1f} MiB   {one_s:6.1f} s")
print(f"  export, {n} languages         {mib(all_b):9.1f} MiB   {all_s:6.1f} s")
print(f"  ... with --int8-lang-adapters {mib(int8_b):8.1f} MiB   {int8_s:6.1f} s")
print(f"  disk ratio {n} / 1 language    {ratio:9.3f}x  (target 1.15x: {verdict(ratio)}; no-duplication floor {floor:.3f}x)")
print(f"  ... with --int8-lang-adapters {int8_ratio:8.3f}x  (target 1.15x: {verdict(int8_ratio)})")
EOF

# What int8 storage costs: every language's logits, exact against int8, on one batch of
# random token ids (ONNX Runtime, CPU).
if "$REF_VENV/bin/python" -c "import onnxruntime" 2>/dev/null; then
    "$REF_VENV/bin/python" - "$WORK/export-all" "$WORK/export-all-int8" "${LANGS[@]}" <<'EOF'
import sys
import numpy as np
import onnxruntime as ort

exact_dir, int8_dir, langs = sys.argv[1], sys.argv[2], sys.argv[3:]
rng = np.random.default_rng(0)
batch, seq = 32, 64
feeds = {
    "input_ids": rng.integers(1000, 100000, size=(batch, seq), dtype=np.int64),
    "attention_mask": np.ones((batch, seq), dtype=np.int64),
    "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
}
worst, largest, agree = 0.0, 0.0, 0
for lang in langs:
    def logits(folder):
        session = ort.InferenceSession(f"{folder}/{lang}.onnx", providers=["CPUExecutionProvider"])
        return session.run(["logits"], feeds)[0]
    a, b = logits(exact_dir), logits(int8_dir)
    worst = max(worst, float(np.abs(a - b).max()))
    largest = max(largest, float(np.abs(a).max()))
    agree += int((a.argmax(-1) == b.argmax(-1)).sum())
print(f"  int8 against exact logits, {len(langs)} languages x {batch} inputs: max |diff| {worst:.2e} "
      f"(largest |logit| {largest:.2f}), same argmax {agree}/{len(langs) * batch}")
EOF
fi

if "$REF_VENV/bin/python" -c "import onnx" 2>/dev/null; then
    "$REF_VENV/bin/python" scripts/checks/check-onnx.py "$WORK/export-all" | tail -1
    "$REF_VENV/bin/python" scripts/checks/check-onnx.py "$WORK/export-all-int8" | tail -1
fi
