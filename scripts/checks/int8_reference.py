#!/usr/bin/env python3
"""The arithmetic of `toolkit export --dtype int8`, computed without ONNX: for each parity case
folder given, the reference model (transformers + adapters, loaded as
scripts/fixtures/make_fixtures.py verifies it) runs on the case's inputs with every
torch.nn.Linear of the encoder and the adapters (modules under `encoder.layer.` and
`invertible_adapters`) replaced by numpy integer arithmetic under the export's quantisation
rules; the pooler and the heads stay float, as in the export.

  activations, per token (one row of the last axis): lo = min(0, min x), hi = max(0, max x),
      scale = max((hi - lo) / 255, smallest positive float32), zero point z = round(-lo / scale),
      xq = round(x / scale) + z (0 to 255, see ACTIVATION_STEPS in src/export/graph.rs),
      rounding halves to even;
  weights, per output feature: scale = max |w| / 127 (1 for an all-zero feature),
      wq = clip(round(w / scale), -127, 127), rounding halves away from zero;
      (an `--int8-cpu any` export stores wq + 128 as uint8 with zero point 128: the same integers)
  y = ((xq @ wq, in integers) * weight scale) * scale - (scale * z) * (weight scale * sum of the
      column of wq) + bias, in float32, in the export's order (z is 0 for a ReLU output, whose
      minimum is 0, and the export leaves that term out).

An activation within float rounding of a half step (|x / scale - k - 1/2| < TIE steps) may
round the other way in ONNX Runtime, whose activations differ from PyTorch's in the last bits:
one element one step off, which the outputs carry. Each case counts such near ties.

Prints {"case name": {"outputs": {"output name": [flat values]}, "near_ties": n}} as JSON. Needs the reference venv
(torch, transformers, adapters, numpy):

    $REF_VENV/bin/python scripts/checks/int8_reference.py tests/fixtures/parity/bert_stack_qa_hf ...
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from make_fixtures import reference_model, run_model  # noqa: E402


# Half-step distance under which PyTorch's and ONNX Runtime's activations (about 1e-7 apart)
# may round to different steps.
TIE = 1e-5


def integer_linear(linear, x, ties):
    rows = x.detach().numpy().astype(np.float32).reshape(-1, x.shape[-1])
    lo = np.minimum(rows.min(axis=1, keepdims=True), np.float32(0))
    hi = np.maximum(rows.max(axis=1, keepdims=True), np.float32(0))
    scale = np.maximum((hi - lo) / np.float32(255), np.finfo(np.float32).tiny)
    ties.append(int((np.abs(np.abs(rows / scale) % 1 - 0.5) < TIE).sum()))
    zero = np.rint(-lo / scale)
    xq = np.clip(np.rint(rows / scale) + zero, 0, 255).astype(np.int64)

    w = linear.weight.detach().numpy().astype(np.float32).T  # [in, out]
    w_scale = np.abs(w).max(axis=0) / np.float32(127)
    w_scale[w_scale == 0] = 1
    ratio = w / w_scale
    wq = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + 0.5), -127, 127).astype(np.int64)
    column_sum = wq.sum(axis=0).astype(np.float32) * w_scale

    y = ((xq @ wq).astype(np.float32) * w_scale) * scale - (scale * zero) * column_sum
    if linear.bias is not None:
        y = y + linear.bias.detach().numpy().astype(np.float32)
    return torch.from_numpy(y.reshape(*x.shape[:-1], -1))


def quantise(model):
    """Replaces the encoder's and adapters' Linear layers; returns the list their near ties go to."""
    ties = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ("encoder.layer." in name or "invertible_adapters" in name):
            module.forward = lambda x, m=module: integer_linear(m, x, ties)
    if not any(isinstance(m, torch.nn.Linear) and "encoder.layer." in n for n, m in model.named_modules()):
        raise SystemExit("no encoder Linear modules found")
    return ties


def main():
    results = {}
    for folder in sys.argv[1:]:
        cdir = Path(folder)
        model, case, rec = reference_model(cdir)
        ties = quantise(model)
        with torch.no_grad():
            outputs, _ = run_model(model, case, rec["inputs"])
        results[cdir.name] = {"outputs": {k: v.reshape(-1).tolist() for k, v in outputs.items()}, "near_ties": sum(ties)}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
