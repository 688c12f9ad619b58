#!/usr/bin/env python3
"""Checks `toolkit export` output with the `onnx` package.

For every model of an export folder (or every .onnx file given):

* `onnx.checker.check_model(path, full_check=True)`: the ONNX checker plus strict shape
  inference, reading external data from beside the model;
* opset >= 17 and an IR version ONNX Runtime 1.24+ loads;
* the graph inputs (int64, symbolic batch and sequence axes) and outputs the manifest names;
* the metadata_props keys the evaluator reads;
* every external tensor lies inside the export's shared data file.

With --fusions, also runs ONNX Runtime's offline transformer optimizer
(`onnxruntime.transformers.optimizer`, BERT fusions only, nothing written) and requires one
fused `Attention` per layer (but a last layer that computes only the first token's output);
it prints the fused operators it made.

Needs the `onnx` package (1.23.x), and `onnxruntime` for --fusions, e.g. in the reference venv
of scripts/fixtures/make-fixtures.sh (its requirements include both):

    $REF_VENV/bin/pip install onnx==1.23.2 onnxruntime==1.31.1
    $REF_VENV/bin/python scripts/checks/check-onnx.py [--fusions] exports/copa-fun [more folders or .onnx files]

Exit status 0 when every model passes, 1 otherwise.
"""

import argparse
import json
import logging
import os
import sys

import onnx
from onnx import TensorProto

MIN_OPSET = 17
# ONNX Runtime 1.24 reads IR versions up to 11.
MAX_IR_VERSION = 11
METADATA_KEYS = ("base_model", "arch", "head_type", "labels", "language", "adapters", "max_seq_len", "tokenizer", "dtype")


def models_of(path):
    """(model path, manifest or None) pairs for an export folder or a model file."""
    if os.path.isdir(path):
        manifest_path = os.path.join(path, "export.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        return [(os.path.join(path, m["file"]), manifest) for m in manifest["models"]]
    return [(path, None)]


def check_model(path, manifest):
    problems = []
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)

    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", 0) < MIN_OPSET:
        problems.append(f"default-domain opset {opsets.get('', 0)} < {MIN_OPSET}")
    if not 7 <= model.ir_version <= MAX_IR_VERSION:
        problems.append(f"IR version {model.ir_version} outside 7..{MAX_IR_VERSION}")

    graph = model.graph
    for inp in graph.input:
        t = inp.type.tensor_type
        if t.elem_type != TensorProto.INT64:
            problems.append(f"input {inp.name} is not int64")
        if not t.shape.dim or any(not d.dim_param for d in t.shape.dim):
            problems.append(f"input {inp.name} has a fixed axis: {t.shape}")
    for out in graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            problems.append(f"output {out.name} is not float32")

    meta = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        problems.append(f"metadata_props lack {missing}")

    folder = os.path.dirname(os.path.abspath(path))
    inline = external = 0
    for t in graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            inline += 1
            continue
        external += 1
        info = {e.key: e.value for e in t.external_data}
        data = os.path.join(folder, info["location"])
        end = int(info.get("offset", 0)) + int(info["length"])
        if not os.path.isfile(data) or os.path.getsize(data) < end:
            problems.append(f"{t.name}: {info['location']} missing or shorter than {end} bytes")

    if manifest is not None:
        names = [i.name for i in graph.input]
        if names != manifest["inputs"]:
            problems.append(f"inputs {names} != manifest {manifest['inputs']}")
        names = [o.name for o in graph.output]
        if names != manifest["outputs"]:
            problems.append(f"outputs {names} != manifest {manifest['outputs']}")
        for t in graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                location = {e.key: e.value for e in t.external_data}["location"]
                if location != manifest["shared_data"]:
                    problems.append(f"{t.name} is in {location}, not {manifest['shared_data']}")

    summary = (
        f"opset {opsets.get('', 0)}, IR {model.ir_version}, {len(graph.node)} nodes, "
        f"{inline} inline + {external} external tensors, language {meta.get('language', '?')!r}"
    )
    return problems, summary


def check_fusions(path):
    """Problems with, and a summary of, the offline optimizer's fusions of the model."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # "producer not matched"
    model = onnx.load(path, load_external_data=False)
    # A last layer that computes only the first token's output (heads that read nothing else)
    # has queries from another input than its keys: not the pattern the fusion looks for.
    first_token_only = sum(n.name.endswith("/first_token") and n.name.startswith("encoder.") for n in model.graph.node)
    layers = sum(n.op_type == "Softmax" for n in model.graph.node) - first_token_only
    fp16 = {p.key: p.value for p in model.metadata_props}.get("dtype") == '"fp16"'
    optimized = optimize_model(path, model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    # fp16 exports keep the softmax in fp32 (Casts around it), which the attention pattern does
    # not allow; optimise the fp32 export with --float16 instead.
    attention = fused.get("Attention", 0)
    problems = [] if fp16 or attention == layers else [f"{attention} of {layers} attention blocks fused"]
    return problems, f"offline fusions {fused}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="export folders (with export.json) or .onnx files")
    parser.add_argument("--fusions", action="store_true", help="also require the offline optimizer to fuse attention")
    args = parser.parse_args()

    failed = 0
    for path in args.paths:
        for model_path, manifest in models_of(path):
            try:
                problems, summary = check_model(model_path, manifest)
                if args.fusions:
                    more, fusions = check_fusions(model_path)
                    problems += more
                    summary += f"; {fusions}"
            except Exception as e:  # the checker raises ValidationError and friends
                problems, summary = [f"{type(e).__name__}: {e}"], ""
            if problems:
                failed += 1
                print(f"FAIL {model_path}")
                for p in problems:
                    print(f"     {p}")
            else:
                print(f"ok   {model_path}: {summary}")
    print(f"onnx {onnx.__version__}: {failed} model(s) failed" if failed else f"onnx {onnx.__version__}: all models pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
