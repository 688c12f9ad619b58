"""Loads a task adapter + flex head that `toolkit train` saved into the `adapters` library and
compares its logits with `toolkit predict` on the same inputs.

usage: check_adapterhub_roundtrip.py MODEL_DIR ADAPTER_DIR PREDICT_INPUT PREDICT_OUTPUT
"""
import json
import sys

import adapters
import torch
from adapters import AutoAdapterModel

model_dir, adapter_dir, input_path, output_path = sys.argv[1:5]
model = AutoAdapterModel.from_pretrained(model_dir)
name = model.load_adapter(adapter_dir, with_head=True, set_active=True, use_safetensors=True)
model.eval()

rows = [json.loads(line) for line in open(input_path)]
ours = [json.loads(line) for line in open(output_path)]
worst = 0.0
with torch.no_grad():
    for row, mine in zip(rows, ours):
        choices = row["choices"]
        ids = [c["input_ids"] for c in choices]
        width = max(len(i) for i in ids)
        pad = model.config.pad_token_id or 0
        input_ids = torch.tensor([[i + [pad] * (width - len(i)) for i in ids]])
        mask = torch.tensor([[[1] * len(i) + [0] * (width - len(i)) for i in ids]])
        types = torch.tensor([[c["token_type_ids"] + [0] * (width - len(c["token_type_ids"])) for c in choices]])
        logits = model(input_ids=input_ids, attention_mask=mask, token_type_ids=types).logits[0]
        worst = max(worst, (logits - torch.tensor(mine["logits"])).abs().max().item())
print(f"adapter `{name}` loaded by adapters {adapters.__version__}; max |logit diff| vs toolkit predict: {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
