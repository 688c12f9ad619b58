#!/usr/bin/env bash
# Fetches the benchmark data from the data sets' own public sources into the layout the
# suites in eval-suites/ and the training configs expect. Needs internet, curl (or wget) and
# unzip (or python3). Idempotent: what is already there is kept.
#
#   scripts/download-data.sh                 # everything into data/
#   scripts/download-data.sh DIR             # everything into DIR
#   scripts/download-data.sh DIR xcopa copa  # only some data sets
#
# Data sets: multinli xnli squad xquad mlqa copa xcopa. Layout under DIR:
#   multinli/multinli_1.0/multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl
#   xnli/XNLI-1.0/xnli.{dev,test}.{tsv,jsonl}
#   squad/{train,dev}-v1.1.json
#   xquad/xquad.{lang}.json
#   mlqa/MLQA_V1/{dev,test}/{split}-context-{lang}-question-{lang}.json
#   copa/{train,val,test}.jsonl                      (SuperGLUE COPA)
#   xcopa/{lang}/{val,test}.{lang}.jsonl
# Each data set keeps its own licence (see their pages); none is redistributed here.
set -euo pipefail

dir=${1:-data}
shift || true
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(multinli xnli squad xquad mlqa copa xcopa)

XQUAD_LANGS="ar de el en es hi ro ru th tr vi zh"
XCOPA_LANGS="et ht id it qu sw ta th tr vi zh"

say() { printf '[download-data] %s\n' "$*"; }

fetch() { # URL FILE: download to FILE (atomically) unless it exists
    local url=$1 file=$2
    [ -s "$file" ] && return 0
    mkdir -p "$(dirname "$file")"
    say "fetching $url"
    if command -v curl >/dev/null; then
        curl -fL --retry 3 -o "$file.part" "$url"
    else
        wget -q -O "$file.part" "$url"
    fi
    mv "$file.part" "$file"
}

unpack() { # ZIP DIR: extract ZIP into DIR, without macOS resource forks
    local zip=$1 into=$2
    mkdir -p "$into"
    if command -v unzip >/dev/null; then
        unzip -q -o "$zip" -x '__MACOSX/*' -d "$into"
    else
        python3 -m zipfile -e "$zip" "$into"
        rm -rf "$into/__MACOSX"
    fi
}

need() { # FILE...: fail if any is missing after a download
    for f in "$@"; do
        [ -s "$f" ] || { echo "download-data: expected $f after the download" >&2; exit 1; }
    done
}

get_multinli() {
    local out=$dir/multinli
    if [ ! -s "$out/multinli_1.0/multinli_1.0_train.jsonl" ]; then
        fetch https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip "$out/multinli_1.0.zip"
        unpack "$out/multinli_1.0.zip" "$out"
        rm -f "$out/multinli_1.0.zip"
    fi
    need "$out"/multinli_1.0/multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl
}

get_xnli() {
    local out=$dir/xnli
    if [ ! -s "$out/XNLI-1.0/xnli.test.tsv" ]; then
        fetch https://dl.fbaipublicfiles.com/XNLI/XNLI-1.0.zip "$out/XNLI-1.0.zip"
        unpack "$out/XNLI-1.0.zip" "$out"
        rm -f "$out/XNLI-1.0.zip"
    fi
    need "$out"/XNLI-1.0/xnli.{dev,test}.tsv
}

get_squad() {
    for split in train dev; do
        fetch "https://rajpurkar.github.io/SQuAD-explorer/dataset/$split-v1.1.json" "$dir/squad/$split-v1.1.json"
    done
}

get_xquad() {
    for lang in $XQUAD_LANGS; do
        fetch "https://raw.githubusercontent.com/google-deepmind/xquad/master/xquad.$lang.json" "$dir/xquad/xquad.$lang.json"
    done
}

get_mlqa() {
    local out=$dir/mlqa
    if [ ! -s "$out/MLQA_V1/test/test-context-en-question-en.json" ]; then
        fetch https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip "$out/MLQA_V1.zip"
        unpack "$out/MLQA_V1.zip" "$out"
        rm -f "$out/MLQA_V1.zip"
    fi
    for lang in en ar de es hi vi zh; do
        need "$out/MLQA_V1/test/test-context-$lang-question-$lang.json" "$out/MLQA_V1/dev/dev-context-$lang-question-$lang.json"
    done
}

get_copa() {
    local out=$dir/copa
    if [ ! -s "$out/val.jsonl" ]; then
        local tmp
        tmp=$(mktemp -d)
        fetch https://dl.fbaipublicfiles.com/glue/superglue/data/v2/COPA.zip "$tmp/COPA.zip"
        unpack "$tmp/COPA.zip" "$tmp"
        mkdir -p "$out"
        for split in train val test; do
            mv "$tmp/COPA/$split.jsonl" "$out/$split.jsonl"
        done
        rm -rf "$tmp"
    fi
    need "$out"/{train,val}.jsonl
}

get_xcopa() {
    for lang in $XCOPA_LANGS; do
        for split in val test; do
            fetch "https://raw.githubusercontent.com/cambridgeltl/xcopa/master/data/$lang/$split.$lang.jsonl" \
                "$dir/xcopa/$lang/$split.$lang.jsonl"
        done
    done
}

for name in "${wanted[@]}"; do
    case $name in
        multinli|xnli|squad|xquad|mlqa|copa|xcopa) "get_$name" ;;
        *) echo "download-data: unknown data set '$name' (multinli xnli squad xquad mlqa copa xcopa)" >&2; exit 2 ;;
    esac
    say "$name ready under $dir"
done
