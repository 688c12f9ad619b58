#!/usr/bin/env python3
"""Reference fixture generator for the toolkit's Rust parity tests.

Writes, under tests/fixtures/:

* parity/<case>/     tiny random-weight BERT / XLM-R models with MAD-X style
                     adapters (built with transformers + the `adapters`
                     library), inputs, and the reference outputs;
* tokenization/mbert_cased.json
                     mBERT (cased) WordPiece tokenizer reference encodings.

Everything is deterministic (fixed seeds, CPU, fp32). After writing, the script
re-runs itself in a fresh process with --verify, which reloads every case from
disk through the public loading API (from_pretrained + load_adapter) and checks
that the stored outputs are reproduced.

Usage:  python scripts/make_fixtures.py [--only parity|tokenization] [--verify]
"""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PARITY = FIXTURES / "parity"
TOKENIZATION = FIXTURES / "tokenization"
MBERT_VOCAB_REL = "../shared/data/vocab/bert-base-multilingual-cased/vocab.txt"

VERIFY_TOL = 1e-6

# --------------------------------------------------------------------------
# Model geometry. Kept small so that all fixtures together stay well below
# 3 MB; identical base checkpoints are produced byte-for-byte identical so
# git stores them once.
# --------------------------------------------------------------------------
HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 48
MAX_LEN = 11  # padded length of the batch used by every non-MC case
MC_LEN = 11  # padded length of each choice in the MC cases

BERT_PAD, BERT_UNK, BERT_CLS, BERT_SEP = 0, 100, 101, 102
XLMR_BOS, XLMR_PAD, XLMR_EOS = 0, 1, 2


def bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=120,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=16,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=BERT_PAD,
    )


def xlmr_config():
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=130,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        # RoBERTa positions start at padding_idx + 1 = 2, so max_len + 2 rows.
        max_position_embeddings=MAX_LEN + 2,
        type_vocab_size=1,
        # Deliberately far from every usual default (1e-12 BERT, 1e-5 XLM-R):
        # a hard-coded epsilon changes the outputs by far more than 1e-6.
        layer_norm_eps=1e-3,
        pad_token_id=XLMR_PAD,
        bos_token_id=XLMR_BOS,
        eos_token_id=XLMR_EOS,
    )


ARCHS = {
    "bert": {"config": bert_config, "arch_name": "bert", "seed": 1000},
    "xlmr": {"config": xlmr_config, "arch_name": "xlm-roberta", "seed": 2000},
}

HEAD_TYPES = {
    "cls": "classification",
    "qa": "question_answering",
    "mc": "multiple_choice",
}


def hf_class(arch, head):
    import transformers as T

    prefix = "Bert" if arch == "bert" else "XLMRoberta"
    suffix = {
        "cls": "ForSequenceClassification",
        "qa": "ForQuestionAnswering",
        "mc": "ForMultipleChoice",
        None: "Model",
    }[head]
    return getattr(T, prefix + suffix)


# --------------------------------------------------------------------------
# Case table
# --------------------------------------------------------------------------
def case_table():
    cases = []
    for arch in ("bert", "xlmr"):
        for head in ("cls", "qa", "mc"):
            cases.append(dict(name=f"{arch}_stack_{head}_hf", arch=arch, head=head, kind="hf", setup="stack"))
        for head in ("cls", "qa", "mc"):
            cases.append(dict(name=f"{arch}_stack_{head}_flex", arch=arch, head=head, kind="flex", setup="stack"))
        cases.append(dict(name=f"{arch}_task_only_cls_hf", arch=arch, head="cls", kind="hf", setup="task_only"))
        cases.append(dict(name=f"{arch}_base_cls_hf", arch=arch, head="cls", kind="hf", setup="none"))
    cases.append(dict(name="bert_stack_cls_custom", arch="bert", head="cls", kind="hf", setup="stack", custom=True))
    # Hugging Face heads saved with the task adapter (save_adapter(with_head=True) on a
    # *For... model): on the flex cases' base checkpoint, which they share.
    for arch in ("bert", "xlmr"):
        for head in ("cls", "qa", "mc"):
            cases.append(dict(name=f"{arch}_stack_{head}_static", arch=arch, head=head, kind="static", setup="stack"))
    train_ref = {"bert_stack_cls_flex", "xlmr_stack_cls_hf"}
    train_ref |= {f"{arch}_stack_{head}_{kind}" for arch in ("bert", "xlmr") for head in ("qa", "mc") for kind in ("hf", "flex")}
    for c in cases:
        c["train_ref"] = c["name"] in train_ref
    return cases


def shared_base_dir(case):
    """model_dir of a static-head case, relative to its case dir: the flex cases' base."""
    return f"../{case['arch']}_stack_cls_flex/model"


def adapter_configs(custom):
    from adapters import SeqBnConfig, SeqBnInvConfig

    if custom:
        lang = SeqBnInvConfig(reduction_factor=4)
        task = SeqBnConfig(reduction_factor=8, scaling=0.5, non_linearity="relu")
    else:
        lang = SeqBnInvConfig(reduction_factor=2)
        task = SeqBnConfig(reduction_factor=16)
    return lang, task


# --------------------------------------------------------------------------
# Deterministic weight randomisation
# --------------------------------------------------------------------------
def randomize_(named_params, seed, weight_std, bias_std=0.1, emb_std=0.5):
    """Overwrite every given parameter with seeded Gaussian noise.

    LayerNorm weights become 1 + N(0, 0.2^2) so that a missing affine transform
    is detected; biases (LayerNorm included) become N(0, bias_std^2).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in named_params:
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            module = name.split(".")[-2].lower() if "." in name else ""
            if "norm" in module:
                if leaf == "weight":
                    p.copy_(1.0 + 0.2 * noise)
                else:
                    p.copy_(bias_std * noise)
            elif "embeddings" in name and leaf == "weight":
                p.copy_(emb_std * noise)
            elif leaf == "bias":
                p.copy_(bias_std * noise)
            else:
                p.copy_(weight_std * noise)


def is_adapter_param(name):
    return ".adapters." in name or "invertible_adapters." in name


def is_flex_head_param(name):
    return name.startswith("heads.")


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def bert_inputs():
    # (segment A length incl. CLS+SEP, segment B length incl. its SEP)
    g = torch.Generator().manual_seed(7)
    specs = [(6, 5), (4, 3), (4, 0)]  # total lengths 11, 7, 4
    ids, types, mask = [], [], []
    normal = [i for i in range(1, 120) if i not in (BERT_UNK, BERT_CLS, BERT_SEP)]
    for a, b in specs:
        row = [BERT_CLS]
        row += [normal[int(j)] for j in torch.randint(len(normal), (a - 2,), generator=g)]
        row += [BERT_SEP]
        if b:
            row += [normal[int(j)] for j in torch.randint(len(normal), (b - 1,), generator=g)]
            row += [BERT_SEP]
        n = len(row)
        tt = [0] * a + [1] * b
        ids.append(row + [BERT_PAD] * (MAX_LEN - n))
        types.append(tt + [0] * (MAX_LEN - n))
        mask.append([1] * n + [0] * (MAX_LEN - n))
    # one [UNK] in the middle of the first sequence, to exercise id 100
    ids[0][3] = BERT_UNK
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def xlmr_inputs():
    g = torch.Generator().manual_seed(8)
    specs = [(6, 5), (4, 3), (4, 0)]
    ids, mask = [], []
    for a, b in specs:
        row = [XLMR_BOS] + [int(t) for t in torch.randint(3, 130, (a - 2,), generator=g)] + [XLMR_EOS]
        if b:
            # RoBERTa pair format: <s> A </s></s> B </s>
            row += [XLMR_EOS] + [int(t) for t in torch.randint(3, 130, (b - 2,), generator=g)] + [XLMR_EOS]
        n = len(row)
        ids.append(row + [XLMR_PAD] * (MAX_LEN - n))
        mask.append([1] * n + [0] * (MAX_LEN - n))
    return {"input_ids": ids, "attention_mask": mask}


def mc_inputs(arch):
    """Batch 2 x 2 choices x MC_LEN, padded at the end."""
    g = torch.Generator().manual_seed(9 if arch == "bert" else 10)
    # (premise length, choice length) without special tokens
    specs = [[(3, 2), (3, 4)], [(2, 1), (2, 3)]]
    ids, mask, types = [], [], []
    for ex in specs:
        e_ids, e_mask, e_types = [], [], []
        for p, c in ex:
            if arch == "bert":
                toks = torch.randint(1, 100, (p + c,), generator=g).tolist()
                row = [BERT_CLS] + toks[:p] + [BERT_SEP] + toks[p:] + [BERT_SEP]
                tt = [0] * (p + 2) + [1] * (c + 1)
                pad = BERT_PAD
            else:
                toks = torch.randint(3, 130, (p + c,), generator=g).tolist()
                row = [XLMR_BOS] + toks[:p] + [XLMR_EOS, XLMR_EOS] + toks[p:] + [XLMR_EOS]
                tt = [0] * len(row)
                pad = XLMR_PAD
            n = len(row)
            assert n <= MC_LEN
            e_ids.append(row + [pad] * (MC_LEN - n))
            e_mask.append([1] * n + [0] * (MC_LEN - n))
            e_types.append(tt + [0] * (MC_LEN - n))
        ids.append(e_ids)
        mask.append(e_mask)
        types.append(e_types)
    out = {"input_ids": ids, "attention_mask": mask}
    if arch == "bert":
        out["token_type_ids"] = types
    return out


def case_inputs(case):
    if case["head"] == "mc":
        return mc_inputs(case["arch"])
    return bert_inputs() if case["arch"] == "bert" else xlmr_inputs()


def to_tensors(inputs):
    return {k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()}


# --------------------------------------------------------------------------
# Float formatting: shortest repr that round-trips to the same float32.
# --------------------------------------------------------------------------
class F32:
    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v


def f32_list(t):
    arr = t.detach().to(torch.float32).cpu().numpy()

    def conv(a):
        if a.ndim == 0:
            return F32(a)
        return [conv(x) for x in a]

    return conv(arr)


def dump_json(obj, path):
    """json.dump with float32 values written as their shortest round-trip repr."""

    def enc(o, indent, level):
        pad = " " * (indent * (level + 1))
        end = " " * (indent * level)
        if isinstance(o, F32):
            v = np.float32(o.v)
            if not np.isfinite(v):
                raise ValueError("non-finite value in fixture")
            s = np.format_float_positional(v, unique=True, trim="-")
            if len(s) > 14:
                s = np.format_float_scientific(v, unique=True, trim="-")
            return s
        if isinstance(o, float):
            return json.dumps(o)
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {enc(v, indent, level + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + end + "}"
        if isinstance(o, (list, tuple)):
            if not o:
                return "[]"
            # numeric leaf lists on one line, nested lists one per line
            if all(not isinstance(x, (list, tuple, dict)) for x in o):
                return "[" + ", ".join(enc(x, indent, level + 1) for x in o) + "]"
            return "[\n" + ",\n".join(pad + enc(x, indent, level + 1) for x in o) + "\n" + end + "]"
        return json.dumps(o, ensure_ascii=False)

    text = enc(obj, 1, 0) + "\n"
    json.loads(text)  # must stay valid JSON
    Path(path).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------
def base_seed(case):
    """Seed of the base checkpoint: shared by all cases with the same HF class."""
    kind_idx = {"cls": 1, "qa": 2, "mc": 3}[case["head"]] if case["kind"] == "hf" else 0
    return ARCHS[case["arch"]]["seed"] + kind_idx


def build_and_save_base(case, model_dir):
    """Create the random base checkpoint and save it (no adapter weights)."""
    cfg = ARCHS[case["arch"]]["config"]()
    # QA heads (HF) project to config.num_labels == 2 (start, end)
    cfg.num_labels = 3 if (case["kind"] == "hf" and case["head"] == "cls") else 2
    torch.manual_seed(base_seed(case))
    cls = hf_class(case["arch"], case["head"] if case["kind"] == "hf" else None)
    # flex cases: encoder only (BertModel / XLMRobertaModel, with pooler)
    model = cls(cfg)
    randomize_(model.named_parameters(), base_seed(case), weight_std=0.15)
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    return model


def load_model(case, model_dir):
    """Load the saved base checkpoint the way a user would."""
    import adapters

    if case["kind"] == "flex":
        model = adapters.AutoAdapterModel.from_pretrained(model_dir, attn_implementation="eager")
    elif case["kind"] == "static":
        # a *For... model on the bare base checkpoint: its head starts random
        cfg = ARCHS[case["arch"]]["config"]()
        cfg.num_labels = 3 if case["head"] == "cls" else 2
        model = hf_class(case["arch"], case["head"]).from_pretrained(model_dir, config=cfg, attn_implementation="eager")
        adapters.init(model)
    else:
        model = hf_class(case["arch"], case["head"]).from_pretrained(model_dir, attn_implementation="eager")
        if case["setup"] != "none":
            adapters.init(model)
    # adapter_config.json / head_config.json record config.name_or_path as
    # "model_name"; use a stable name instead of the absolute checkout path.
    model.config.name_or_path = f"toolkit-tiny-random-{case['arch']}"
    model.eval()
    return model


def add_flex_head(model, head):
    if head == "cls":
        model.add_classification_head("task", num_labels=3)
    elif head == "qa":
        model.add_qa_head("task")
    else:
        model.add_multiple_choice_head("task", num_choices=2)


def active_setup(case):
    from adapters.composition import Stack

    if case["setup"] == "stack":
        return Stack("lang", "task")
    if case["setup"] == "task_only":
        return "task"
    return None


def run_model(model, case, inputs):
    t = to_tensors(inputs)
    out = model(**t, output_hidden_states=True, return_dict=True)
    res = {}
    if case["head"] == "qa":
        res["start_logits"] = out.start_logits
        res["end_logits"] = out.end_logits
    else:
        res["logits"] = out.logits
    hs = out.hidden_states[-1]
    return res, hs


def encoder_output(model, inputs):
    """last_hidden_state of the (adapter-augmented) encoder, MC choices flattened."""
    t = to_tensors(inputs)
    if t["input_ids"].dim() == 3:
        t = {k: v.reshape(-1, v.shape[-1]) for k, v in t.items()}
    return model.base_model(**t, return_dict=True).last_hidden_state


# --------------------------------------------------------------------------
# Training reference (gradients + Fisher quantities)
# --------------------------------------------------------------------------
def log_likelihood(out, case, y):
    """log p(y|x) per example as the toolkit defines it (src/train/batch.rs log_likelihood):
    for QA the start and end are independent, log p(start) + log p(end)."""

    def pick(scores, labels):
        return F.log_softmax(scores, -1).gather(1, labels[:, None])[:, 0]

    if case["head"] == "qa":
        return pick(out.start_logits, y["start"]) + pick(out.end_logits, y["end"])
    return pick(out.logits, y)


def mean_nll(out, case, y):
    """-mean_i log p(y_i|x_i) (F.cross_entropy where it is the same)."""
    if case["head"] == "qa":
        return -log_likelihood(out, case, y).mean()
    return F.cross_entropy(out.logits, y)


def training_loss(out, case, y):
    """The Hugging Face loss: mean cross-entropy; for QA the mean of the start and end ones."""
    if case["head"] == "qa":
        return (F.cross_entropy(out.start_logits, y["start"]) + F.cross_entropy(out.end_logits, y["end"])) / 2
    return F.cross_entropy(out.logits, y)


def labels_json(y):
    return {k: v.tolist() for k, v in y.items()} if isinstance(y, dict) else y.tolist()


def labels_tensor(j):
    return {k: torch.tensor(v) for k, v in j.items()} if isinstance(j, dict) else torch.tensor(j)


def train_reference(model, case, inputs, task_keys, head_keys):
    """Gradients of the task adapter / head and per-layer Fisher statistics."""
    model.eval()  # dropout off
    trainable = {}
    for name, p in model.named_parameters():
        train = (
            (".adapters.task." in name)
            or is_flex_head_param(name)
            or name.startswith("classifier.")
            or name.startswith("qa_outputs.")
        )
        p.requires_grad_(train)
        if train:
            trainable[name] = p
    # every trainable parameter must appear under the same key in a saved file
    missing = set(trainable) - (set(task_keys) | set(head_keys))
    assert not missing, f"trainable params not in saved files: {sorted(missing)}"

    t = to_tensors(inputs)
    bsz = t["input_ids"].shape[0]
    with torch.no_grad():
        out0 = model(**t)
    # gold labels: disagree with the model's own (argmax) labels on some examples
    if case["head"] == "qa":
        seq = t["input_ids"].shape[-1]
        pred = {"start": out0.start_logits.argmax(-1), "end": out0.end_logits.argmax(-1)}
        gold = {
            "start": (pred["start"] + torch.tensor([1, 0, 2])) % seq,
            "end": (pred["end"] + torch.tensor([0, 3, 1])) % seq,
        }
    else:
        pred = out0.logits.argmax(-1)
        classes = out0.logits.shape[-1]
        shift = torch.tensor([1, 0, 2][:bsz])
        gold = (pred + shift) % classes

    def layer_params(layer):
        names = [n for n in trainable if f"layer.{layer}.output.adapters.task." in n]
        assert len(names) == 4, names
        return sorted(names)

    per_layer = [layer_params(l) for l in range(LAYERS)]

    def sq_norms(grads_by_name):
        return [float(sum((grads_by_name[n].double() ** 2).sum() for n in names)) for names in per_layer]

    def grads_of(loss, names):
        gs = torch.autograd.grad(loss, [trainable[n] for n in names], allow_unused=True)
        return {n: g for n, g in zip(names, gs)}

    def example(y, i):
        return {k: v[i : i + 1] for k, v in y.items()} if isinstance(y, dict) else y[i : i + 1]

    names_all = list(trainable)

    # 1) the gold-label training loss: all grads (stored)
    loss_gold = training_loss(model(**t), case, gold)
    grads = {f"grad.{n}": g.detach().contiguous().clone() for n, g in grads_of(loss_gold, names_all).items() if g is not None}
    # 2) batch-mean negative log-likelihood, gold and predicted labels
    g_gold = grads_of(mean_nll(model(**t), case, gold), names_all)
    g_pred = grads_of(mean_nll(model(**t), case, pred), names_all)
    loss_pred = training_loss(model(**t), case, pred)

    # 3) per-example squared gradient norms of log p(y_hat | x), padded as in batch
    per_ex = np.zeros(LAYERS)
    for i in range(bsz):
        ti = {k: v[i : i + 1] for k, v in t.items()}
        logp = log_likelihood(model(**ti), case, example(pred, i))[0]
        per_ex += np.array(sq_norms(grads_of(logp, names_all)))
    per_ex /= bsz

    for p in model.parameters():
        p.requires_grad_(False)

    fisher = {
        "fisher_per_example": per_ex.tolist(),
        "batch_mean_grad_sq_norm": sq_norms(g_pred),
        "batch_mean_grad_sq_norm_gold": sq_norms(g_gold),
        "predicted_labels": labels_json(pred),
        "layer_param_names": per_layer,
    }
    return {
        "labels": labels_json(gold),
        "loss_gold": float(loss_gold.detach()),
        "loss_predicted": float(loss_pred.detach()),
        "fisher": fisher,
        "grads": grads,
    }


# --------------------------------------------------------------------------
# Case generation
# --------------------------------------------------------------------------
def generate_case(case):
    from safetensors.torch import load_file, save_file

    import adapters  # noqa: F401

    cdir = PARITY / case["name"]
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    if case["kind"] == "static":
        model_rel = shared_base_dir(case)
        model = load_model(case, cdir / model_rel)
    else:
        model_rel = "model"
        built = build_and_save_base(case, cdir / model_rel)
        model = load_model(case, cdir / model_rel)
        # the reloaded base must equal what was built (checks prefix handling)
        built_sd = built.state_dict()
        for k, v in model.state_dict().items():
            bk = k
            if case["kind"] == "flex":
                bk = k.split(".", 1)[1] if k.startswith(model.base_model_prefix + ".") else None
            if bk is not None and bk in built_sd:
                assert torch.equal(v, built_sd[bk]), k

    case_seed = 50_000 + sum(ord(c) * (i + 1) for i, c in enumerate(case["name"]))
    lang_cfg, task_cfg = adapter_configs(case.get("custom", False))
    if case["setup"] == "stack":
        model.add_adapter("lang", config=lang_cfg)
    if case["setup"] in ("stack", "task_only"):
        model.add_adapter("task", config=task_cfg)
    if case["kind"] == "flex":
        add_flex_head(model, case["head"])

    def is_new(name):
        static_head = case["kind"] == "static" and not name.startswith(model.base_model_prefix + ".")
        return is_adapter_param(name) or is_flex_head_param(name) or static_head

    new_params = [(n, p) for n, p in model.named_parameters() if is_new(n)]
    randomize_(new_params, case_seed, weight_std=0.2, bias_std=0.1)

    setup = active_setup(case)
    if setup is not None:
        model.set_active_adapters(setup)
        if case["kind"] == "flex":
            assert model.active_head == "task", model.active_head
    model.eval()

    inputs = case_inputs(case)
    with torch.no_grad():
        outs, hs = run_model(model, case, inputs)
        hs2 = encoder_output(model, inputs)
    assert torch.allclose(hs, hs2, atol=0, rtol=0), "hidden_states[-1] != base_model last_hidden_state"

    # save adapters in AdapterHub layout
    task_keys, head_keys = [], []
    if case["setup"] == "stack":
        model.save_adapter(str(cdir / "lang"), "lang", with_head=False, use_safetensors=True)
    if case["setup"] in ("stack", "task_only"):
        model.save_adapter(str(cdir / "task"), "task", with_head=case["kind"] != "hf", use_safetensors=True)
        task_keys = list(load_file(str(cdir / "task" / "adapter.safetensors")).keys())
        if case["kind"] != "hf":
            head_keys = list(load_file(str(cdir / "task" / "model_head.safetensors")).keys())
    if case["kind"] == "hf":
        head_keys = [k for k in load_file(str(cdir / "model" / "model.safetensors")) if not k.startswith(model.base_model_prefix + ".")]

    rec = {
        "arch": ARCHS[case["arch"]]["arch_name"],
        "model_dir": model_rel,
        "lang_adapter": "lang" if case["setup"] == "stack" else None,
        "task_adapter": "task" if case["setup"] in ("stack", "task_only") else None,
        "active_setup": {"stack": ["lang", "task"], "task_only": ["task"], "none": []}[case["setup"]],
        "head": {
            "kind": case["kind"],
            "type": HEAD_TYPES[case["head"]],
        },
        "inputs": inputs,
        "outputs": {k: f32_list(v) for k, v in outs.items()},
        "last_hidden_state": f32_list(hs),
        "notes": case_notes(case),
    }

    if case["train_ref"]:
        tr = train_reference(model, case, inputs, task_keys, head_keys)
        save_file(tr["grads"], str(cdir / "train_ref.safetensors"))
        rec["labels"] = tr["labels"]
        rec["loss_gold"] = tr["loss_gold"]
        rec["loss_predicted"] = tr["loss_predicted"]
        rec["fisher"] = tr["fisher"]
        rec["train_ref"] = "train_ref.safetensors"

    dump_json(rec, cdir / "case.json")
    return rec


def case_notes(case):
    parts = []
    arch = "BERT" if case["arch"] == "bert" else "XLM-R (RoBERTa positions, pad id 1, layer_norm_eps 1e-3)"
    parts.append(f"{arch}; hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, intermediate {INTERMEDIATE}, gelu(erf).")
    if case["kind"] == "hf":
        parts.append(f"HF head {hf_class(case['arch'], case['head']).__name__}; head weights live in model/model.safetensors.")
    elif case["kind"] == "static":
        parts.append(
            f"HF head {hf_class(case['arch'], case['head']).__name__} saved with the task adapter "
            "(head_config.json with \"config\": null, HF key names in task/model_head.safetensors); "
            f"base checkpoint {shared_base_dir(case)} (the flex cases')."
        )
    else:
        parts.append(
            "Flex head 'task' (adapters AdapterModel); model/ holds the bare encoder (keys without the "
            "bert./roberta. prefix, pooler present but unused); head in task/model_head.safetensors."
        )
    if case["setup"] == "stack":
        if case.get("custom"):
            parts.append("Stack(lang, task): lang = seq_bn_inv reduction_factor 4; task = seq_bn reduction_factor 8, scaling 0.5, relu.")
        else:
            parts.append("Stack(lang, task): lang = seq_bn_inv reduction_factor 2 (NICE invertible adapter); task = seq_bn reduction_factor 16.")
    elif case["setup"] == "task_only":
        parts.append("Only task adapter (seq_bn reduction_factor 16) active; no language / invertible adapter.")
    else:
        parts.append("No adapters: plain HF model.")
    if case["head"] == "mc":
        parts.append("inputs are [batch=2, choices=2, seq]; last_hidden_state is for the flattened [4, seq] batch.")
    parts.append("fp32, eval mode (dropout off), eager attention. All weights random (adapter std 0.2).")
    return " ".join(parts)


# --------------------------------------------------------------------------
# Verification in a fresh process
# --------------------------------------------------------------------------
def verify_case(cdir):
    import adapters  # noqa: F401

    rec = json.loads((cdir / "case.json").read_text())
    arch = "bert" if rec["arch"] == "bert" else "xlmr"
    head = {v: k for k, v in HEAD_TYPES.items()}[rec["head"]["type"]]
    kind = rec["head"]["kind"]
    setup = "none" if not rec["active_setup"] else ("stack" if len(rec["active_setup"]) == 2 else "task_only")
    # A static head is loaded the way users load a Hub adapter into a flex model: the library
    # converts it to a flex head named after the adapter.
    flex = kind in ("flex", "static")
    case = dict(arch=arch, head=head, kind="flex" if flex else "hf", setup=setup)
    model = load_model(case, cdir / rec["model_dir"])
    if rec["lang_adapter"]:
        model.load_adapter(str(cdir / rec["lang_adapter"]), with_head=False, use_safetensors=True)
    if rec["task_adapter"]:
        model.load_adapter(str(cdir / rec["task_adapter"]), with_head=flex, use_safetensors=True)
    s = active_setup(case)
    if s is not None:
        model.set_active_adapters(s)
        if flex:
            assert model.active_head == "task"
    model.eval()
    worst = 0.0
    with torch.no_grad():
        outs, hs = run_model(model, case, rec["inputs"])
    for k, v in outs.items():
        worst = max(worst, (v - torch.tensor(rec["outputs"][k])).abs().max().item())
    worst = max(worst, (hs - torch.tensor(rec["last_hidden_state"])).abs().max().item())
    if "labels" in rec:
        with torch.no_grad():
            loss = training_loss(model(**to_tensors(rec["inputs"])), case, labels_tensor(rec["labels"]))
        worst = max(worst, abs(float(loss) - rec["loss_gold"]))
    return worst


# --------------------------------------------------------------------------
# Independent re-implementation of the math documented in tests/fixtures/
# README.md, straight from the files on disk (no transformers / adapters
# modules involved). It keeps the README honest.
# --------------------------------------------------------------------------
ACTS = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x),
    "tanh": torch.tanh,
    "swish": F.silu,
    "silu": F.silu,
}


def _strip(d, prefix):
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in d.items()}


def manual_forward(cdir, rec, eps_override=None, skip_inv=False):
    from safetensors.torch import load_file

    cfg = json.loads((cdir / rec["model_dir"] / "config.json").read_text())
    is_xlmr = rec["arch"] == "xlm-roberta"
    prefix = "roberta." if is_xlmr else "bert."
    W = _strip(load_file(str(cdir / rec["model_dir"] / "model.safetensors")), prefix)
    if rec["head"]["kind"] == "static":
        W.update(load_file(str(cdir / rec["task_adapter"] / "model_head.safetensors")))
    eps = cfg["layer_norm_eps"] if eps_override is None else eps_override
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = H // nh

    adapters_w, adapters_cfg = {}, {}
    for name in rec["active_setup"]:
        adapters_w[name] = _strip(load_file(str(cdir / name / "adapter.safetensors")), prefix)
        adapters_cfg[name] = json.loads((cdir / name / "adapter_config.json").read_text())["config"]

    def lin(x, key):
        return F.linear(x, W[key + ".weight"], W.get(key + ".bias"))

    def ln(x, key):
        return F.layer_norm(x, (H,), W[key + ".weight"], W[key + ".bias"], eps)

    inp = {k: torch.tensor(v) for k, v in rec["inputs"].items()}
    mc = inp["input_ids"].dim() == 3
    if mc:
        n_choices = inp["input_ids"].shape[1]
        inp = {k: v.reshape(-1, v.shape[-1]) for k, v in inp.items()}
    ids, mask = inp["input_ids"], inp["attention_mask"]
    B, T = ids.shape
    if is_xlmr:
        pad = cfg["pad_token_id"]
        keep = (ids != pad).long()
        pos = torch.cumsum(keep, 1) * keep + pad
    else:
        pos = torch.arange(T).expand(B, T)
    tt = inp.get("token_type_ids", torch.zeros_like(ids))
    x = (
        W["embeddings.word_embeddings.weight"][ids]
        + W["embeddings.position_embeddings.weight"][pos]
        + W["embeddings.token_type_embeddings.weight"][tt]
    )
    x = ln(x, "embeddings.LayerNorm")

    # invertible adapter of the FIRST adapter of the active setup, after embeddings
    if rec["active_setup"] and not skip_inv:
        first = rec["active_setup"][0]
        iw = adapters_w[first]
        k = f"invertible_adapters.{first}."
        if k + "F.0.weight" in iw:
            act = ACTS[adapters_cfg[first]["non_linearity"]]

            def sub(z, n):
                z = F.linear(z, iw[k + n + ".0.weight"], iw[k + n + ".0.bias"])
                return F.linear(act(z), iw[k + n + ".2.weight"], iw[k + n + ".2.bias"])

            x1, x2 = x[..., : H // 2], x[..., H // 2 :]
            y1 = x1 + sub(x2, "F")
            y2 = x2 + sub(y1, "G")
            x = torch.cat([y1, y2], -1)

    add_mask = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = lin(x, p + "attention.self.query").view(B, T, nh, dh).transpose(1, 2)
        k_ = lin(x, p + "attention.self.key").view(B, T, nh, dh).transpose(1, 2)
        v = lin(x, p + "attention.self.value").view(B, T, nh, dh).transpose(1, 2)
        probs = torch.softmax(q @ k_.transpose(-1, -2) / dh**0.5 + add_mask, -1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, T, H)
        h = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        o = lin(F.gelu(lin(h, p + "intermediate.dense")), p + "output.dense")
        out_ln = p + "output.LayerNorm"
        if rec["active_setup"]:
            hs = o
            for name in rec["active_setup"]:
                c = adapters_cfg[name]
                aw = adapters_w[name]
                ak = f"{p}output.adapters.{name}."
                residual = hs  # residual_before_ln = True
                z = ln(hs + h, out_ln)  # original_ln_before = True
                z = F.linear(z, aw[ak + "adapter_down.0.weight"], aw[ak + "adapter_down.0.bias"])
                z = ACTS[c["non_linearity"]](z)
                z = F.linear(z, aw[ak + "adapter_up.weight"], aw[ak + "adapter_up.bias"])
                hs = z * c["scaling"] + residual
            x = ln(hs + h, out_ln)  # original_ln_after = True (last adapter)
        else:
            x = ln(o + h, out_ln)

    outs = {}
    htype = rec["head"]["type"]
    if rec["head"]["kind"] == "flex":
        hw = load_file(str(cdir / rec["task_adapter"] / "model_head.safetensors"))
        hc = json.loads((cdir / rec["task_adapter"] / "head_config.json").read_text())["config"]
        hk = "heads.task."
        lin_idx = sorted({int(k[len(hk):].split(".")[0]) for k in hw})
        z = x if htype == "question_answering" else x[:, 0]
        for j, idx in enumerate(lin_idx):
            z = F.linear(z, hw[f"{hk}{idx}.weight"], hw.get(f"{hk}{idx}.bias"))
            if j < len(lin_idx) - 1:
                z = ACTS[hc["activation_function"]](z)
        logits = z
    else:
        if htype == "question_answering":
            logits = lin(x, "qa_outputs")
        elif htype == "classification" and is_xlmr:
            logits = lin(torch.tanh(lin(x[:, 0], "classifier.dense")), "classifier.out_proj")
        else:  # BERT classification, BERT / XLM-R multiple choice: pooler + linear
            pooled = torch.tanh(lin(x[:, 0], "pooler.dense"))
            logits = lin(pooled, "classifier")
    if htype == "question_answering":
        outs["start_logits"], outs["end_logits"] = logits[..., 0], logits[..., 1]
    elif htype == "multiple_choice":
        outs["logits"] = logits.reshape(-1, n_choices)
    else:
        outs["logits"] = logits
    return outs, x


def manual_check(cdir):
    rec = json.loads((cdir / "case.json").read_text())
    with torch.no_grad():
        outs, x = manual_forward(cdir, rec)

        def diff(o, hs):
            d = max((o[k] - torch.tensor(rec["outputs"][k])).abs().max().item() for k in o)
            return max(d, (hs - torch.tensor(rec["last_hidden_state"])).abs().max().item())

        worst = diff(outs, x)
        extra = {}
        if rec["active_setup"] == ["lang", "task"] and rec["head"]["type"] == "classification":
            extra["eps=1e-5"] = diff(*manual_forward(cdir, rec, eps_override=1e-5))
            extra["eps=1e-12"] = diff(*manual_forward(cdir, rec, eps_override=1e-12))
            extra["no_inv"] = diff(*manual_forward(cdir, rec, skip_inv=True))
    return worst, extra


def grad_consistency(cdir):
    """Stored gradients must reproduce the stored gold-label per-layer norms."""
    from safetensors.torch import load_file

    rec = json.loads((cdir / "case.json").read_text())
    if "train_ref" not in rec:
        return None
    grads = load_file(str(cdir / rec["train_ref"]))
    # the QA training loss is half the negative log-likelihood: gradients halve, norms quarter
    scale = 4.0 if rec["head"]["type"] == "question_answering" else 1.0
    worst = 0.0
    for names, ref in zip(rec["fisher"]["layer_param_names"], rec["fisher"]["batch_mean_grad_sq_norm_gold"]):
        val = scale * sum(float((grads["grad." + n].double() ** 2).sum()) for n in names)
        worst = max(worst, abs(val - ref) / max(ref, 1e-12))
    return worst


def verify_all():
    torch.set_grad_enabled(True)
    bad = []
    for cdir in sorted(p for p in PARITY.iterdir() if (p / "case.json").exists()):
        worst = verify_case(cdir)
        status = "ok" if worst < VERIFY_TOL else "FAIL"
        print(f"verify {cdir.name:28s} max|diff| = {worst:.3e}  {status}")
        if worst >= VERIFY_TOL:
            bad.append(cdir.name)
        gworst = grad_consistency(cdir)
        if gworst is not None:
            print(f"  train_ref: |sum grad^2 per layer - batch_mean_grad_sq_norm_gold| = {gworst:.3e}")
            if gworst > 1e-5:
                bad.append(cdir.name + " (train_ref)")
        mworst, extra = manual_check(cdir)
        mstatus = "ok" if mworst < 1e-5 else "FAIL"
        sens = "  ".join(f"[{k}: {v:.1e}]" for k, v in extra.items())
        print(f"  documented-math reimplementation max|diff| = {mworst:.3e}  {mstatus}  {sens}")
        if mworst >= 1e-5:
            bad.append(cdir.name + " (manual)")
    if bad:
        raise SystemExit(f"verification failed for {bad}")


# --------------------------------------------------------------------------
# Tokenization fixture
# --------------------------------------------------------------------------
SINGLES = [
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("de", "Grüße aus München! Die Straße ist schön, über Äpfel und Öl."),
    ("fr", "L'élève a déjà reçu sa leçon à l'école, n'est-ce pas ?"),
    ("es", "¿Dónde está la biblioteca? ¡Mañana será otro día!"),
    ("ru", "Съешь же ещё этих мягких французских булок, да выпей чаю."),
    ("el", "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο."),
    ("ar", "مرحبا بالعالم، كيف حالك اليوم؟"),
    ("hi", "नमस्ते दुनिया, आप कैसे हैं?"),
    ("th", "สวัสดีครับ วันนี้อากาศดีมาก"),
    ("zh", "我们今天去北京大学学习自然语言处理。"),
    ("ja", "東京タワーはとても高いです。ひらがなとカタカナ。"),
    ("ko", "안녕하세요, 만나서 반갑습니다."),
    ("tr", "İstanbul'da ılık bir gün; şöyle böyle, çok güzel."),
    ("vi", "Tiếng Việt có nhiều dấu thanh: à, á, ả, ã, ạ."),
    ("sw", "Habari za asubuhi? Ninapenda kusoma vitabu vya Kiswahili."),
    ("ht", "Bonjou, kijan ou ye? Mwen byen, mèsi anpil."),
    ("qu", "Allillanchu? Ñuqaqa Qusqumanta kani, runasimita rimani."),
    ("ta", "வணக்கம், நீங்கள் எப்படி இருக்கிறீர்கள்?"),
    ("digits_punct", "Price: $1,234.56 (approx. 7.5%) -- call 555-0199 #42!!"),
    ("emoji_unknown", "I love pizza 🍕🍕 and \u2603 snow \U0001F9EC dna \uE000 private"),
    ("spaces_controls", "  multiple   spaces\there\n\nand\u00a0nbsp\u200bzero-width \u0007bell  "),
    ("nfd_combining", "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 vs Café naïve résumé"),
    ("long_word", "Short words then " + "supercalifragilistic" * 6 + " and more."),
    ("mixed_scripts", "BERT模型 works with Ελληνικά, русский и العربية in 1 sentence."),
    ("empty_like", "   "),
]

PAIRS = [
    ("en", "Who wrote the book?", "The book was written by Jane Austen in 1813."),
    ("de", "Wo liegt München?", "München liegt in Bayern, im Süden Deutschlands."),
    ("fr", "Qu'est-ce que c'est ?", "C'est une pièce de théâtre très célèbre."),
    ("zh_en", "北京在哪里？", "Beijing is the capital of China."),
    ("ru_el", "Где находится Афины?", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας."),
    ("hi_ar", "भारत की राजधानी क्या है?", "عاصمة الهند هي نيودلهي."),
    ("th_ko", "กรุงเทพฯ อยู่ที่ไหน", "방콕은 태국의 수도입니다."),
    ("sw_ht", "Mji mkuu wa Kenya ni upi?", "Pòtoprens se kapital Ayiti."),
]

TRUNCATION = [
    dict(
        id="trunc_longest_first",
        text="Where did the quick brown fox jump over the lazy dog yesterday?",
        text_pair="The fox jumped over the dog in the garden behind the old farmhouse near the river.",
        max_length=16,
        truncation="longest_first",
    ),
    dict(
        id="trunc_only_second",
        text="Where did the fox jump?",
        text_pair="The fox jumped over the dog in the garden behind the old farmhouse near the river.",
        max_length=16,
        truncation="only_second",
    ),
    dict(
        id="trunc_single",
        text="Ein sehr langer deutscher Satz über Straßenbahnhaltestellen und Öffnungszeiten.",
        text_pair=None,
        max_length=16,
        truncation="longest_first",
    ),
]


def byte_offsets(text, offsets):
    """Convert char (code point) offsets to UTF-8 byte offsets."""
    cum = [0]
    for ch in text:
        cum.append(cum[-1] + len(ch.encode("utf-8")))
    return [[cum[a], cum[b]] for a, b in offsets]


def encode_record(tok, rid, text, text_pair=None, **kw):
    enc = tok(
        text,
        text_pair,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_attention_mask=False,
        add_special_tokens=True,
        **kw,
    )
    be = enc.encodings[0] if hasattr(enc, "encodings") and enc.encodings else None
    offsets = [list(o) for o in enc["offset_mapping"]]
    seq_ids = be.sequence_ids if be is not None else enc.sequence_ids()
    rec = {"id": rid, "text": text}
    if text_pair is not None:
        rec["text_pair"] = text_pair
    if kw:
        rec["max_length"] = kw["max_length"]
        rec["truncation"] = kw["truncation"]
    rec["input_ids"] = enc["input_ids"]
    rec["tokens"] = tok.convert_ids_to_tokens(enc["input_ids"])
    rec["token_type_ids"] = enc["token_type_ids"]
    rec["sequence_ids"] = list(seq_ids)
    rec["offsets"] = offsets
    # offsets index the text the token came from (text for seq 0, text_pair for seq 1)
    byte = []
    for (a, b), sid in zip(offsets, seq_ids):
        src = text_pair if sid == 1 else text
        byte.append(byte_offsets(src, [(a, b)])[0] if sid is not None else [0, 0])
    rec["byte_offsets"] = byte
    return rec


def generate_tokenization():
    from transformers import BertTokenizerFast

    vocab = (ROOT / MBERT_VOCAB_REL).resolve()
    if not vocab.exists():
        print(
            f"SKIP tokenization fixture: mBERT vocab not found at {vocab} "
            "(needs the shared data folder next to the checkout); keeping the existing file"
        )
        return
    tok = BertTokenizerFast(
        vocab_file=str(vocab),
        do_lower_case=False,
        strip_accents=None,
        tokenize_chinese_chars=True,
        clean_text=True,
    )
    norm = json.loads(tok.backend_tokenizer.normalizer.__getstate__())
    model_state = json.loads(tok.backend_tokenizer.model.__getstate__())
    pre = json.loads(tok.backend_tokenizer.pre_tokenizer.__getstate__())
    settings = {
        "class": "transformers.BertTokenizerFast",
        "do_lower_case": False,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "clean_text": True,
        "normalizer": norm,
        "pre_tokenizer": pre,
        "wordpiece": {
            "unk_token": model_state.get("unk_token"),
            "continuing_subword_prefix": model_state.get("continuing_subword_prefix"),
            "max_input_chars_per_word": model_state.get("max_input_chars_per_word"),
        },
        "special_tokens": {
            "[PAD]": tok.pad_token_id,
            "[UNK]": tok.unk_token_id,
            "[CLS]": tok.cls_token_id,
            "[SEP]": tok.sep_token_id,
            "[MASK]": tok.mask_token_id,
        },
        "vocab_size": tok.vocab_size,
        "pair_template": "[CLS] A [SEP] B [SEP]; token_type 0 for [CLS] A [SEP], 1 for B [SEP]",
    }
    recs = [encode_record(tok, f"single_{rid}", t) for rid, t in SINGLES]
    recs += [encode_record(tok, f"pair_{rid}", a, b) for rid, a, b in PAIRS]
    recs += [
        encode_record(tok, c["id"], c["text"], c["text_pair"], max_length=c["max_length"], truncation=c["truncation"])
        for c in TRUNCATION
    ]
    # sanity: the long word must have become a single [UNK]
    lw = next(r for r in recs if r["id"] == "single_long_word")
    assert "[UNK]" in lw["tokens"], lw["tokens"]
    for r in recs:
        if "max_length" in r:
            assert len(r["input_ids"]) <= r["max_length"]
    out = {
        "vocab_file": MBERT_VOCAB_REL,
        "vocab_file_relative_to": "repository root",
        "settings": settings,
        "notes": (
            "offsets are Python str (Unicode code point) offsets into text (sequence_ids 0) or text_pair "
            "(sequence_ids 1), [0,0] for special tokens; byte_offsets are the same spans in UTF-8 bytes. "
            "sequence_ids: null for special tokens."
        ),
        "cases": recs,
    }
    TOKENIZATION.mkdir(parents=True, exist_ok=True)
    path = TOKENIZATION / "mbert_cased.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({len(recs)} cases)")


# --------------------------------------------------------------------------
def check_versions():
    """Warn when the installed stack differs from scripts/reference/requirements.txt."""
    from importlib.metadata import PackageNotFoundError, version

    req = ROOT / "scripts" / "reference" / "requirements.txt"
    if not req.exists():
        return
    for line in req.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, want = (x.strip() for x in line.split("==", 1))
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have is None or have.split("+")[0] != want:
            print(f"WARNING: {name} {have} installed, fixtures were made with {want}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["parity", "tokenization"])
    ap.add_argument("--verify", action="store_true", help="only re-verify existing parity fixtures")
    ap.add_argument("--case", action="append", help="generate only these parity cases")
    args = ap.parse_args()
    check_versions()

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # adapters warns spuriously inside set_active_adapters (reset_adapter runs
    # a ForwardContext before the new setup is stored)
    logging.getLogger("adapters").setLevel(logging.ERROR)

    if args.verify:
        verify_all()
        return

    if args.only in (None, "tokenization"):
        generate_tokenization()
    if args.only in (None, "parity"):
        torch.manual_seed(0)
        for case in case_table():
            if args.case and case["name"] not in args.case:
                continue
            generate_case(case)
            print(f"wrote {(PARITY / case['name']).relative_to(ROOT)}")
        # reload everything from disk in a fresh interpreter
        subprocess.run([sys.executable, __file__, "--verify"], check=True)


if __name__ == "__main__":
    main()
