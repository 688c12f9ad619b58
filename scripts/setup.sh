#!/usr/bin/env bash
# Sets up everything the toolkit needs on a fresh machine, offline except for the package
# registries, and builds the release binary. Idempotent: a second run only checks.
#
#   scripts/setup.sh            # libtorch + ONNX Runtime + onnx.proto, then `cargo build --release`
#   scripts/setup.sh --no-build # only the libraries
#   TOOLKIT_NO_TORCH=1 scripts/setup.sh  # eval/export-only machine: no libtorch (build with
#                                        # --no-default-features --features eval)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
PY=${PYTHON:-python3}
VENV=.venv

build=1
[ "${1:-}" = "--no-build" ] && build=0

say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV"
fi

# libtorch for tch 0.26 comes from the torch wheel, installed without its CUDA dependencies;
# libtorch_cpu.so still needs these two small CUDA runtime libraries.
if [ -z "${TOOLKIT_NO_TORCH:-}" ]; then
    if ! "$VENV/bin/pip" show torch 2>/dev/null | grep "^Version: $TORCH_VERSION" >/dev/null; then
        say "installing libtorch (torch==$TORCH_VERSION wheel, ~1.2 GB)"
        "$VENV/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    fi
    torch_dir=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch
    ln -sfn "$torch_dir" "$VENV/libtorch"
fi

# ONNX Runtime shared library (loaded at run time by `ort`) and the onnx.proto schema, both
# taken out of their PyPI wheels.
if [ ! -f "$VENV/ort/libonnxruntime.so.$ORT_VERSION" ] || [ ! -f "$VENV/onnx/onnx.proto" ]; then
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    say "fetching onnxruntime==$ORT_VERSION and onnx==$ONNX_VERSION wheels"
    "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$wheels" \
        "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION"
    mkdir -p "$VENV/ort" "$VENV/onnx"
    "$VENV/bin/python" - "$wheels" "$VENV" "$ORT_VERSION" <<'PYEOF'
import glob, os, sys, zipfile
wheels, venv, ort_version = sys.argv[1:]
lib = f"onnxruntime/capi/libonnxruntime.so.{ort_version}"
for path in glob.glob(os.path.join(wheels, "*.whl")):
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name == lib:
                target = os.path.join(venv, "ort", os.path.basename(name))
            elif name == "onnx/onnx.proto":
                target = os.path.join(venv, "onnx", "onnx.proto")
            else:
                continue
            with z.open(name) as src, open(target + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.replace(target + ".tmp", target)
PYEOF
fi
test -f "$VENV/ort/libonnxruntime.so.$ORT_VERSION" || { echo "setup: libonnxruntime missing" >&2; exit 1; }
test -f "$VENV/onnx/onnx.proto" || { echo "setup: onnx.proto missing" >&2; exit 1; }

# `toolkit report` draws its figures with a TrueType font (DejaVu, from Debian's packages).
if ! ls /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf >/dev/null 2>&1 && [ -z "${TOOLKIT_FONT:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing fonts-dejavu-core (for report figures)"
        (apt-get install -y -qq fonts-dejavu-core >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq fonts-dejavu-core >/dev/null 2>&1; }) \
            || say "could not install fonts-dejavu-core: report figures need TOOLKIT_FONT=FILE.ttf"
    else
        say "no DejaVu font: report figures need fonts-dejavu-core or TOOLKIT_FONT=FILE.ttf"
    fi
fi

if [ "$build" = 1 ]; then
    if [ -n "${TOOLKIT_NO_TORCH:-}" ]; then
        say "building target/release/toolkit (eval + export only)"
        cargo build --release --no-default-features --features eval
    else
        say "building target/release/toolkit"
        cargo build --release
    fi
fi
say "ready: target/release/toolkit --help"
