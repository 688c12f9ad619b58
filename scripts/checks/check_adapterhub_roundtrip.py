"""The Python half of scripts/checks/check-adapterhub-roundtrip.sh: a task adapter + head that
`toolkit train` saved, loaded into the `adapters` library, must give the logits of
`toolkit predict` on the same token ids.

usage:
  check_adapterhub_roundtrip.py tiny-models FIXTURES COPA_TRAIN OUT
      OUT/tiny-bert, OUT/tiny-xlmr: the parity fixtures' tiny base checkpoints (they have a
      pooler) with a word-level tokenizer.json over the most frequent COPA words; OUT/nli.jsonl:
      NLI records made of COPA sentences with seeded random labels (the round trip needs
      inputs of the task's shape, not a learnable task).
  check_adapterhub_roundtrip.py inputs TASK MODEL_DIR DATA_FILE MAX_LENGTH OUT
      8 inputs for `toolkit predict`, as token ids of MODEL_DIR's tokenizer.json.
  check_adapterhub_roundtrip.py compare MODEL_DIR ADAPTER_DIR PREDICT_INPUT PREDICT_OUTPUT [LANG_ADAPTER_DIR]
      prints the max |logit diff|; exits 1 above 1e-4. With LANG_ADAPTER_DIR (a MAD-X language
      adapter, as `toolkit predict --lang-adapter` got) the library runs Stack(lang, task).
"""
import collections
import json
import random
import re
import shutil
import sys
from pathlib import Path

TOLERANCE = 1e-4
ROWS = 8


def tiny_models(fixtures, copa_train, out):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing

    out = Path(out)
    records = [json.loads(line) for line in open(copa_train)]
    words = collections.Counter(
        w for r in records for t in (r["premise"], r["choice1"], r["choice2"]) for w in re.findall(r"\w+|[^\w\s]", t.lower())
    )
    # (fixture case, special tokens by id, pair template); ids as in the fixtures' configs.
    models = {
        "tiny-bert": ("bert_stack_cls_flex", {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]"},
                      ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"), "[UNK]", "[CLS]", "[SEP]"),
        "tiny-xlmr": ("xlmr_stack_cls_flex", {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>"},
                      ("<s> $A </s>", "<s> $A </s> </s> $B </s>"), "<unk>", "<s>", "</s>"),
    }
    for name, (case, specials, (single, pair), unk, cls, sep) in models.items():
        base = Path(fixtures) / case / "model"
        config = json.loads((base / "config.json").read_text())
        dest = out / name
        dest.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(base / f, dest / f)
        common = iter(w for w, _ in words.most_common())
        vocab = {specials[i] if i in specials else next(common): i for i in range(config["vocab_size"])}
        tok = Tokenizer(WordLevel(vocab, unk_token=unk))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.post_processor = TemplateProcessing(
            single=single, pair=pair, special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])]
        )
        tok.save(str(dest / "tokenizer.json"))
    rng = random.Random(0)
    with open(out / "nli.jsonl", "w") as f:
        for r in records[:64]:
            f.write(json.dumps({"premise": r["premise"], "hypothesis": r["choice1"], "label": rng.randrange(3)}) + "\n")


def inputs(task, model_dir, data_file, max_length, out):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.enable_truncation(int(max_length), strategy="only_second" if task == "qa" else "longest_first")
    # Models with one token type (XLM-R) get type 0 everywhere.
    one_type = json.loads((Path(model_dir) / "config.json").read_text()).get("type_vocab_size", 2) == 1

    def seq(a, b):
        e = tok.encode(a, b)
        return {"input_ids": e.ids, "token_type_ids": [0] * len(e.ids) if one_type else e.type_ids}

    if task == "qa":
        data = json.load(open(data_file))["data"]
        pairs = [(q["question"], p["context"]) for a in data for p in a["paragraphs"] for q in p["qas"]][:ROWS]
        rows = [seq(q, c) for q, c in pairs]
    elif task == "copa":
        # (premise, choice) for each choice: both sides get the same ids, so the text need not be
        # the trainer's COPA prompt, which src/features/copa.rs alone builds.
        rows = []
        for line in list(open(data_file))[:ROWS]:
            r = json.loads(line)
            rows.append({"choices": [seq(r["premise"], c) for c in (r["choice1"], r["choice2"])]})
    else:
        rows = [seq(r["premise"], r["hypothesis"]) for r in map(json.loads, list(open(data_file))[:ROWS])]
    with open(out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def compare(model_dir, adapter_dir, input_path, output_path, lang_adapter_dir=None):
    import adapters
    import torch
    from adapters import AutoAdapterModel
    from adapters.composition import Stack

    model = AutoAdapterModel.from_pretrained(model_dir)
    task = model.load_adapter(adapter_dir, with_head=True, set_active=True, use_safetensors=True)
    name, active = task, {task}
    if lang_adapter_dir is not None:
        lang = model.load_adapter(lang_adapter_dir, with_head=False, use_safetensors=True)
        assert lang != task, f"the language and the task adapter are both named `{task}`"
        model.active_adapters = Stack(lang, task)
        name, active = f"Stack({lang}, {task})", {lang, task}
    # The comparison means something only with the adapters and the head in the forward pass.
    assert model.active_adapters.flatten() == active and model.active_head == task, (model.active_adapters, model.active_head)
    model.eval()
    pad = model.config.pad_token_id or 0
    worst = lang_effect = 0.0
    rows = [json.loads(line) for line in open(input_path)]
    ours = [json.loads(line) for line in open(output_path)]
    assert len(rows) == len(ours) == ROWS, (len(rows), len(ours))
    with torch.no_grad():
        for row, mine in zip(rows, ours):
            seqs = row.get("choices", [row])
            width = max(len(s["input_ids"]) for s in seqs)
            padded = lambda key, fill: [s[key] + [fill] * (width - len(s[key])) for s in seqs]  # noqa: E731
            batch = {
                "input_ids": torch.tensor(padded("input_ids", pad)),
                "attention_mask": torch.tensor([[1] * len(s["input_ids"]) + [0] * (width - len(s["input_ids"])) for s in seqs]),
                "token_type_ids": torch.tensor(padded("token_type_ids", 0)),
            }
            if "choices" in row:
                batch = {k: v[None] for k, v in batch.items()}
            out = model(**batch)
            for key in ("logits", "start_logits", "end_logits"):
                if key in mine:
                    theirs = getattr(out, key)[0]
                    worst = max(worst, (theirs - torch.tensor(mine[key])).abs().max().item())
            if lang_adapter_dir is not None:
                # The language adapter must matter: the task adapter alone gives other logits.
                model.active_adapters = task
                alone = model(**batch)
                model.active_adapters = Stack(lang, task)
                for key in ("logits", "start_logits", "end_logits"):
                    if key in mine:
                        lang_effect = max(lang_effect, (getattr(alone, key)[0] - torch.tensor(mine[key])).abs().max().item())
    effect = f" (without the language adapter: {lang_effect:.2e})" if lang_adapter_dir is not None else ""
    print(f"adapter `{name}` loaded by adapters {adapters.__version__}; max |logit diff| vs toolkit predict: {worst:.2e}{effect}")
    return worst < TOLERANCE and (lang_adapter_dir is None or lang_effect > 10 * TOLERANCE)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "tiny-models":
        tiny_models(*args)
    elif command == "inputs":
        inputs(*args)
    elif command == "compare":
        sys.exit(0 if compare(*args) else 1)
    else:
        sys.exit(__doc__)
