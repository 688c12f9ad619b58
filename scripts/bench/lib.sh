# shellcheck shell=bash
# Sourced (after scripts/paths.sh) by the benchmark scripts that time `toolkit` against the
# reference stack. The sourcing script defines say() and die() (messages under its own name).

# Cores kept busy by other processes, sampled over 2 s while the benchmark runs nothing.
busy_cores() {
    local a b
    a=$(head -1 /proc/stat); sleep 2; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = 0
        for (i = 2; i <= 9; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.2f", (t > 0) ? (t - idle) / t * n : 0 }'
}

# private_toolkit WORK COMMAND: points TOOLKIT at a binary that has `toolkit COMMAND`: the given
# TOOLKIT (checked), else the release build (`cargo build --release`, default features) copied
# to WORK/toolkit at once, since other builds may replace target/release/toolkit meanwhile.
private_toolkit() {
    local work=$1 command=$2 built=0
    mkdir -p "$work"
    if [ -n "$toolkit_given" ]; then
        "$TOOLKIT" "$command" --help >/dev/null 2>&1 || die "$TOOLKIT has no \`$command\` command (built without the train feature?)"
        return
    fi
    for _ in 1 2; do
        say "building the release binary (cargo build --release)"
        cargo build --release --quiet
        cp target/release/toolkit "$work/toolkit.tmp"
        # Another build (other features) may have replaced the binary in between.
        if "$work/toolkit.tmp" "$command" --help >/dev/null 2>&1; then
            mv "$work/toolkit.tmp" "$work/toolkit"; built=1; break
        fi
        say "target/release/toolkit has no \`$command\` (replaced by another build?); building again"
    done
    [ "$built" = 1 ] || die "could not get a toolkit binary with \`$command\`"
    TOOLKIT=$work/toolkit
}

# The CPU's model name, e.g. "AMD EPYC".
cpu_name() {
    awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo
}

# gemm_peak PYTHON THREADS [WEIGHTS [N]]: this machine's GEMM peak now, as ONNX Runtime (CPU,
# THREADS threads) reaches it on one N x N x N product (default 2048): a float32 MatMul and a
# MatMulInteger of uint8 activations and WEIGHTS weights (int8, the default, or uint8: the
# kernel an `--int8-cpu vnni` or `any` export runs; the weights an initializer, as in an int8
# export, so both are prepacked). Prints `fp32 GFLOPS int8 GOPS`, the best of 5 runs each
# (2 N^3 operations a run). PYTHON needs onnx, onnxruntime and numpy.
gemm_peak() {
    "$1" - "$2" "${4:-2048}" "${3:-int8}" <<'PY'
import sys, time
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

threads, n, weights = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)

def best_rate(op, a, b, a_type, y_type):
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", a_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"a": a})
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        session.run(None, {"a": a})
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9

fp32 = best_rate("MatMul", rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32),
                 TensorProto.FLOAT, TensorProto.FLOAT)
b = rng.integers(-127, 128, (n, n), dtype=np.int8) if weights == "int8" else rng.integers(0, 256, (n, n), dtype=np.uint8)
int8 = best_rate("MatMulInteger", rng.integers(0, 256, (n, n), dtype=np.uint8), b, TensorProto.UINT8, TensorProto.INT32)
print(f"{fp32:.1f} {int8:.1f}")
PY
}

# torch_gemm_peak PYTHON THREADS [N]: this machine's GEMM peak now, as libtorch (the library
# `toolkit train` runs on; PYTHON's torch, THREADS threads) reaches it on one N x N x N
# torch.mm (default 2048), in float32 and in bfloat16. Prints `fp32 bf16` in GFLOP/s, the best
# of 5 runs each (2 N^3 operations a run; one run where it takes over 2 s: bf16 without
# hardware support runs emulated, hundreds of times slower).
torch_gemm_peak() {
    "$1" - "$2" "${3:-2048}" <<'PY'
import sys, time
import torch

threads, n = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)

def best_rate(dtype):
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    best = time.perf_counter() - start
    # Where bf16 is emulated one product takes about a minute: the warm-up's time is then the figure.
    for _ in range(5 if best < 2 else 0):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9

print(f"{best_rate(torch.float32):.1f} {best_rate(torch.bfloat16):.1f}")
PY
}
