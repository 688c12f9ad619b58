"""XQuAD split by article, for recipes that train on XQuAD and score it without leaks.

Every XQuAD language file holds the same 48 articles in the same order. Articles 0-23 give the
training questions (English) and the MLM text (one paragraph per line, per language);
articles 24-47 are scored, by a copy of eval-suites/xquad.toml limited to LANGS.

    python3 scripts/recipes/xquad_split.py XQUAD_DIR OUT_DIR [LANG ...]

writes OUT_DIR/xquad/train.en.json, OUT_DIR/xquad/xquad.LANG.json (held out),
OUT_DIR/text/LANG.txt and OUT_DIR/xquad-heldout.toml. Without LANGs: every language of the suite.
"""
import json
import os
import sys
import tomllib

SUITE = os.path.join(os.path.dirname(__file__), "..", "..", "eval-suites", "xquad.toml")


def main():
    src, dst, langs = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(SUITE, "rb") as f:
        suite_langs = tomllib.load(f)["languages"]
    langs = langs or suite_langs
    for sub in ("xquad", "text"):
        os.makedirs(os.path.join(dst, sub), exist_ok=True)
    for lang in langs:
        path = os.path.join(src, f"xquad.{lang}.json")
        if not os.path.exists(path):
            sys.exit(f"xquad_split: no {path} (a language XQuAD does not have?)")
        with open(path) as f:
            doc = json.load(f)
        half = len(doc["data"]) // 2
        train, heldout = doc["data"][:half], doc["data"][half:]
        version = doc.get("version", "")
        if lang == "en":
            write_json(os.path.join(dst, "xquad", "train.en.json"), {"version": version, "data": train})
        write_json(os.path.join(dst, "xquad", f"xquad.{lang}.json"), {"version": version, "data": heldout})
        with open(os.path.join(dst, "text", f"{lang}.txt"), "w") as f:
            for article in train:
                for paragraph in article["paragraphs"]:
                    f.write(" ".join(paragraph["context"].split()) + "\n")
    lines = []
    with open(SUITE) as f:
        for line in f:
            if line.startswith("name = "):
                line = 'name = "xquad-heldout"\n'
            elif line.startswith("description = "):
                line = 'description = "XQuAD, the 24 articles not used for training (F1 / exact match)"\n'
            elif line.startswith("languages = ") and langs != suite_langs:
                line = "languages = [" + ", ".join(f'"{l}"' for l in langs) + "]\n"
            lines.append(line)
    with open(os.path.join(dst, "xquad-heldout.toml"), "w") as f:
        f.writelines(lines)


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


if __name__ == "__main__":
    main()
