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
      with `--activations tensor` (`--int8-activations tensor`) the same over the whole input
      tensor, as ONNX's DynamicQuantizeLinear computes it (scale 1 where hi = lo); in the last
      layer under a head that reads only the first token, the export computes only that
      token's projections (but for keys and values), so their tensor is the first tokens';
      `--activations mixed`: per token for each layer's intermediate.dense and output.dense,
      per tensor for the rest;
  weights, per output feature: scale = max |w| / 127 (1 for an all-zero feature),
      wq = clip(round(w / scale), -127, 127), rounding halves away from zero;
      (an `--int8-cpu any` export stores wq + 128 as uint8 with zero point 128: the same integers)
  y = ((xq @ wq, in integers) * weight scale) * scale - (scale * z) * (weight scale * sum of the
      column of wq) + bias, in float32, in the export's order (z is 0 for a ReLU output, whose
      minimum is 0, and the export leaves that term out); per tensor,
      y = ((xq - z) @ wq, in integers) * (scale * weight scale) + bias, as ONNX Runtime's
      MatMulIntegerToFloat computes it.

An activation within float rounding of a half step (|x / scale - k - 1/2| < TIE steps) may
round the other way in ONNX Runtime, whose activations differ from PyTorch's in the last bits:
one element one step off, which the outputs carry. Each case counts such near ties.

Prints {"case name": {"outputs": {"output name": [flat values]}, "near_ties": n}} as JSON. Needs the reference venv
(torch, transformers, adapters, numpy):

    $REF_VENV/bin/python scripts/checks/int8_reference.py [--activations token|mixed|tensor] tests/fixtures/parity/bert_stack_qa_hf ...
"""

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from make_fixtures import reference_model, run_model  # noqa: E402


# Half-step distance under which PyTorch's and ONNX Runtime's activations (about 1e-7 apart)
# may round to different steps.
TIE = 1e-5


def quantised_weight(linear):
    """The int8 weight [in, out] and its per-column scales."""
    w = linear.weight.detach().numpy().astype(np.float32).T  # [in, out]
    w_scale = np.abs(w).max(axis=0) / np.float32(127)
    w_scale[w_scale == 0] = 1
    ratio = w / w_scale
    wq = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + 0.5), -127, 127).astype(np.int64)
    return wq, w_scale


def integer_product(xq, wq):
    """xq @ wq of integer arrays, exactly: in float64 (BLAS), whose 53-bit sums hold every partial
    sum here (|uint8 x int8| < 2^15, at most a few thousand terms); numpy's int64 product has no
    BLAS (with it, scripts/checks/int8_error_budget.py took 7.5x as long)."""
    return xq.astype(np.float64) @ wq.astype(np.float64)


def bias(linear):
    return 0 if linear.bias is None else linear.bias.detach().numpy().astype(np.float32)


def count_ties(rows, scale, ties):
    ties.append(int((np.abs(np.abs(rows / scale) % 1 - 0.5) < TIE).sum()))


def token_linear(linear, x, ties, first_token):
    rows = x.detach().numpy().astype(np.float32).reshape(-1, x.shape[-1])
    lo = np.minimum(rows.min(axis=1, keepdims=True), np.float32(0))
    hi = np.maximum(rows.max(axis=1, keepdims=True), np.float32(0))
    scale = np.maximum((hi - lo) / np.float32(255), np.finfo(np.float32).tiny)
    count_ties(rows, scale, ties)
    zero = np.rint(-lo / scale)
    xq = np.clip(np.rint(rows / scale) + zero, 0, 255).astype(np.int64)
    wq, w_scale = quantised_weight(linear)
    column_sum = wq.sum(axis=0).astype(np.float32) * w_scale
    y = (integer_product(xq, wq).astype(np.float32) * w_scale) * scale - (scale * zero) * column_sum + bias(linear)
    return torch.from_numpy(y.reshape(*x.shape[:-1], -1))


def tensor_linear(linear, x, ties, first_token):
    rows = x.detach().numpy().astype(np.float32).reshape(-1, x.shape[-1])
    seen = x[:, 0, :].detach().numpy().astype(np.float32) if first_token else rows
    lo = np.minimum(seen.min(), np.float32(0))
    hi = np.maximum(seen.max(), np.float32(0))
    scale = np.float32(1) if hi == lo else (hi - lo) / np.float32(255)
    count_ties(seen, scale, ties)
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    xq = np.clip(np.rint(rows / scale) + zero, 0, 255).astype(np.int64)
    wq, w_scale = quantised_weight(linear)
    y = integer_product(xq - np.int64(zero), wq).astype(np.float32) * (scale * w_scale) + bias(linear)
    return torch.from_numpy(y.reshape(*x.shape[:-1], -1))


def mixed_linear(linear, x, ties, first_token):
    per_token = token_linear if linear.feed_forward else tensor_linear
    return per_token(linear, x, ties, first_token)


def quantise(model, integer_linear, first_token_head):
    """Replaces the encoder's and adapters' Linear layers; returns the list their near ties go to."""
    ties = []
    last = f"encoder.layer.{model.config.num_hidden_layers - 1}."
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ("encoder.layer." in name or "invertible_adapters" in name):
            first = first_token_head and last in name and not name.endswith(("attention.self.key", "attention.self.value"))
            module.feed_forward = re.search(r"encoder\.layer\.\d+\.(intermediate|output)\.dense$", name) is not None
            module.forward = lambda x, m=module, f=first: integer_linear(m, x, ties, f)
    if not any(isinstance(m, torch.nn.Linear) and "encoder.layer." in n for n, m in model.named_modules()):
        raise SystemExit("no encoder Linear modules found")
    return ties


def main():
    parser = argparse.ArgumentParser(description="int8 export arithmetic in numpy (see the module's text)")
    parser.add_argument("--activations", choices=["token", "mixed", "tensor"], default="token")
    parser.add_argument("cases", nargs="+", help="parity case folders")
    args = parser.parse_args()
    integer_linear = {"token": token_linear, "mixed": mixed_linear, "tensor": tensor_linear}[args.activations]
    results = {}
    for folder in args.cases:
        cdir = Path(folder)
        model, case, rec = reference_model(cdir)
        head_type = json.loads((cdir / "case.json").read_text())["head"]["type"]
        ties = quantise(model, integer_linear, head_type != "question_answering")
        with torch.no_grad():
            outputs, _ = run_model(model, case, rec["inputs"])
        results[cdir.name] = {"outputs": {k: v.reshape(-1).tolist() for k, v in outputs.items()}, "near_ties": sum(ties)}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
