#!/usr/bin/env bash
# Sets up everything the toolkit needs on a fresh machine, offline except for the package
# registries, and builds the release binary. Idempotent: a second run only checks.
#
#   scripts/setup.sh            # libtorch + ONNX Runtime + onnx.proto, then `cargo build --release`
#   scripts/setup.sh --no-build # only the libraries
#   scripts/setup.sh --cuda     # also the CUDA libraries torch's wheel depends on (~3 GB) and
#                               # onnxruntime-gpu's library, built with `--features cuda`, for
#                               # `train/eval --device cuda` (scripts/check-gpu.sh checks it)
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
cuda=0
for arg in "$@"; do
    case $arg in
        --no-build) build=0 ;;
        --cuda) cuda=1 ;;
        *) echo "setup: unknown option $arg (known: --no-build, --cuda)" >&2; exit 2 ;;
    esac
done

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
# CUDA: torch's own CUDA dependencies (cuBLAS, cuDNN, ... as nvidia-* wheels: libtorch_cuda finds
# them by its rpath), and the onnxruntime-gpu library in place of the CPU one (it runs on the CPU
# too). Its CUDA provider finds nothing by rpath, so cuda-libraries.txt lists the files the
# toolkit loads before starting it (src/runtime.rs), relative to .venv/ort.
if [ "$cuda" = 1 ]; then
    if [ -z "${TOOLKIT_NO_TORCH:-}" ] && ! "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("nvidia.cudnn") is None)' 2>/dev/null; then
        say "installing torch==$TORCH_VERSION's CUDA dependencies (~3 GB)"
        "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
    fi
    if [ "$(cat "$VENV/ort/flavour" 2>/dev/null)" != "onnxruntime-gpu==$ORT_VERSION" ]; then
        say "installing the onnxruntime-gpu==$ORT_VERSION library and its CUDA dependencies"
        "$VENV/bin/pip" install -q nvidia-cuda-runtime~=13.0 nvidia-cuda-nvrtc~=13.0 nvidia-cufft~=12.0 \
            nvidia-curand~=10.0 nvidia-cublas~=13.0 nvidia-cudnn-cu13~=9.0
        gpu_wheels=$(mktemp -d)
        "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$gpu_wheels" "onnxruntime-gpu==$ORT_VERSION"
        "$VENV/bin/python" - "$gpu_wheels" "$VENV" <<'PYEOF'
import glob, os, sys, sysconfig, zipfile
wheels, venv = sys.argv[1:]
ort_dir = os.path.join(venv, "ort")
(wheel,) = glob.glob(os.path.join(wheels, "onnxruntime_gpu-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/lib") and (base.startswith("libonnxruntime.so.")
                                                         or base in ("libonnxruntime_providers_shared.so",
                                                                     "libonnxruntime_providers_cuda.so")):
            target = os.path.join(ort_dir, base)
            with z.open(name) as src, open(target + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.replace(target + ".tmp", target)
# Dependencies before dependants: cuBLASLt before cuBLAS, the runtime first.
sonames = ["libcudart.so.13", "libnvrtc.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10",
           "libcufft.so.12", "libcudnn.so.9"]
nvidia = os.path.join(sysconfig.get_paths()["purelib"], "nvidia")
found = {}
for root, _, files in os.walk(nvidia):
    for f in files:
        if f in sonames and f not in found:
            found[f] = os.path.relpath(os.path.join(root, f), ort_dir)
missing = [s for s in sonames if s not in found]
if missing:
    sys.exit(f"setup: not found under {nvidia}: {', '.join(missing)}")
with open(os.path.join(ort_dir, "cuda-libraries.txt.tmp"), "w") as out:
    out.write("".join(found[s] + "\n" for s in sonames))
os.replace(os.path.join(ort_dir, "cuda-libraries.txt.tmp"), os.path.join(ort_dir, "cuda-libraries.txt"))
PYEOF
        rm -rf "$gpu_wheels"
        echo "onnxruntime-gpu==$ORT_VERSION" > "$VENV/ort/flavour"
    fi
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
        say "building target/release/toolkit (eval + export only$([ "$cuda" = 1 ] && echo ", CUDA"))"
        cargo build --release --no-default-features --features "$([ "$cuda" = 1 ] && echo cuda || echo eval)"
    else
        say "building target/release/toolkit$([ "$cuda" = 1 ] && echo " (CUDA)")"
        cargo build --release $([ "$cuda" = 1 ] && echo "--features cuda")
    fi
fi
say "ready: target/release/toolkit --help"
