#!/usr/bin/env python3
"""Legacy-checkpoint fixture: the parity case `bert_stack_cls_hf` as an old Hub release ships it.

Reads tests/fixtures/parity/bert_stack_cls_hf and writes tests/fixtures/legacy/bert_stack_cls_hf_bin/:

* model/pytorch_model.bin   the base checkpoint in the legacy (pre-1.6) torch.save stream, with
                            old Hugging Face names (`LayerNorm.gamma`/`beta` in the embeddings),
                            an int64 `position_ids` buffer, the word embeddings as float64 and
                            one weight as a non-contiguous (transposed) view;
* lang/pytorch_adapter.bin  zip torch.save, old key names (`layer_text_lang_adapters`,
                            `invertible_lang_adapters`), saved name `en`, one weight as float16,
                            one as bfloat16, two biases sharing one storage;
* task/pytorch_adapter.bin  zip torch.save, `layer_text_task_adapters`, saved name `sst`, a
                            transposed view and a bias at a storage offset;
* */adapter_config.json     v1 configs without a `version` key: the lang adapter spells its
                            invertible adapter as `invertible_adapter: {block_type, ...}` and uses
                            "gelu" (which the adapters library reads as the tanh approximation,
                            in NICE too), the task adapter "gelu_orig" (the erf GELU);
* ../bert_stack_cls_flex_head/pytorch_model_head.bin
                            the flex head of parity/bert_stack_cls_flex as a zip torch.save
                            (one weight a transposed view); the tests swap it in for
                            model_head.safetensors and expect identical weights;
* case.json                 the original's inputs; outputs recomputed by the reference stack
                            (transformers + adapters) loading these very files, since the
                            float16/bfloat16 tensors and the activations differ from the original.
                            `stored` lists which tensors were written how.

Run with the reference venv:  /work/refvenv/bin/python scripts/make_legacy_fixture.py
"""

import json
import logging
import shutil
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

SRC = mf.PARITY / "bert_stack_cls_hf"
DST = mf.FIXTURES / "legacy" / "bert_stack_cls_hf_bin"
FLEX_SRC = mf.PARITY / "bert_stack_cls_flex"
FLEX_DST = mf.FIXTURES / "legacy" / "bert_stack_cls_flex_head"

LEGACY_NAMES = {"lang": ("en", "layer_text_lang_adapters"), "task": ("sst", "layer_text_task_adapters")}


def legacy_config(src_dir, saved_name, non_linearity):
    """The adapter_config.json an adapter-transformers 1.x release wrote: no `version`."""
    cfg = json.loads((src_dir / "adapter_config.json").read_text())["config"]
    v1 = {
        k: cfg[k]
        for k in [
            "original_ln_before",
            "original_ln_after",
            "residual_before_ln",
            "adapter_residual_before_ln",
            "ln_before",
            "ln_after",
            "mh_adapter",
            "output_adapter",
            "reduction_factor",
            "leave_out",
        ]
    }
    v1["non_linearity"] = non_linearity
    if cfg["inv_adapter"]:
        # The nested non_linearity is ignored by the library (NICE uses the adapter's own).
        v1["invertible_adapter"] = {
            "block_type": cfg["inv_adapter"],
            "non_linearity": "relu",
            "reduction_factor": cfg["inv_adapter_reduction_factor"],
        }
    return {
        "config": v1,
        "hidden_size": mf.HIDDEN,
        "model_class": "BertModelWithHeads",
        "model_name": "toolkit-tiny-random-bert",
        "model_type": "bert",
        "name": saved_name,
    }


def non_contiguous(t):
    """The same values as a transposed view of a contiguous transpose."""
    v = t.t().contiguous().t()
    assert not v.is_contiguous() and torch.equal(v, t)
    return v


def at_offset(t, pad=5):
    """The same values as a view at a storage offset into a larger storage."""
    v = torch.cat([torch.full((pad,), 7.0), t])[pad:]
    assert v.storage_offset() == pad and torch.equal(v, t)
    return v


def write_adapter(role, stored):
    from safetensors.torch import load_file

    saved_name, layer_key = LEGACY_NAMES[role]
    src = load_file(str(SRC / role / "adapter.safetensors"))
    sd = OrderedDict()
    for k, v in src.items():
        k = k.replace(f".adapters.{role}.", f".{layer_key}.{saved_name}.")
        k = k.replace(f"invertible_adapters.{role}.", f"invertible_lang_adapters.{saved_name}.")
        sd[k] = v
    if role == "lang":
        half = f"bert.encoder.layer.1.output.{layer_key}.en.adapter_up.weight"
        sd[half] = sd[half].half()
        bf16 = "bert.invertible_lang_adapters.en.G.2.weight"
        sd[bf16] = sd[bf16].bfloat16()
        a, b = "bert.invertible_lang_adapters.en.F.0.bias", "bert.invertible_lang_adapters.en.G.0.bias"
        both = torch.cat([sd[a], sd[b]])
        sd[a], sd[b] = both[: len(sd[a])], both[len(sd[a]) :]
        stored.update(float16=[half], bfloat16=[bf16], shared_storage=[a, b])
        non_linearity = "gelu"
    else:
        w = f"bert.encoder.layer.0.output.{layer_key}.sst.adapter_down.0.weight"
        sd[w] = non_contiguous(sd[w])
        b = f"bert.encoder.layer.0.output.{layer_key}.sst.adapter_up.bias"
        sd[b] = at_offset(sd[b])
        stored.setdefault("non_contiguous", []).append(w)
        stored.setdefault("storage_offset", []).append(b)
        non_linearity = "gelu_orig"
    out = DST / role
    out.mkdir(parents=True)
    torch.save(sd, out / "pytorch_adapter.bin")
    mf.dump_json(legacy_config(SRC / role, saved_name, non_linearity), out / "adapter_config.json")


def write_model(stored):
    from safetensors.torch import load_file

    src = load_file(str(SRC / "model" / "model.safetensors"))
    sd = OrderedDict()
    for k, v in src.items():
        if k.startswith("bert.embeddings.LayerNorm."):
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        sd[k] = v
    sd["bert.embeddings.position_ids"] = torch.arange(16).unsqueeze(0)
    emb = "bert.embeddings.word_embeddings.weight"
    sd[emb] = sd[emb].double()
    q = "bert.encoder.layer.0.attention.self.query.weight"
    sd[q] = non_contiguous(sd[q])
    stored.setdefault("float64", []).append(emb)
    stored.setdefault("non_contiguous", []).append(q)
    stored["not_float"] = ["bert.embeddings.position_ids"]
    out = DST / "model"
    out.mkdir(parents=True)
    shutil.copy(SRC / "model" / "config.json", out / "config.json")
    torch.save(sd, out / "pytorch_model.bin", _use_new_zipfile_serialization=False)


def write_flex_head():
    from safetensors.torch import load_file

    sd = OrderedDict(load_file(str(FLEX_SRC / "task" / "model_head.safetensors")))
    sd["heads.task.1.weight"] = non_contiguous(sd["heads.task.1.weight"])
    if FLEX_DST.exists():
        shutil.rmtree(FLEX_DST)
    FLEX_DST.mkdir(parents=True)
    torch.save(sd, FLEX_DST / "pytorch_model_head.bin")


def reference_outputs(rec):
    """The reference stack, loading the legacy files as a user would (no safetensors)."""
    from adapters.composition import Stack
    from transformers.activations import GELUActivation, NewGELUActivation

    case = dict(arch="bert", head="cls", kind="hf", setup="stack")
    model = mf.load_model(case, DST / "model")
    model.load_adapter(str(DST / "lang"), load_as="lang", with_head=False)
    model.load_adapter(str(DST / "task"), load_as="task", with_head=False)
    model.set_active_adapters(Stack("lang", "task"))
    model.eval()
    # The legacy activation names took effect: tanh GELU (lang, NICE too), erf GELU (task).
    out0 = model.bert.encoder.layer[0].output
    assert isinstance(out0.adapters["lang"].non_linearity.f, NewGELUActivation)
    assert isinstance(out0.adapters["task"].non_linearity.f, GELUActivation)
    nice = model.bert.invertible_adapters["lang"]
    assert isinstance(nice.F[1].f, NewGELUActivation), nice
    with torch.no_grad():
        outs, hs = mf.run_model(model, case, rec["inputs"])
        hs2 = mf.encoder_output(model, rec["inputs"])
    assert torch.equal(hs, hs2)
    # Every tensor reached the model: the float16/bfloat16 ones rounded, the rest exact.
    from safetensors.torch import load_file

    expected = {}
    for f in ["model/model.safetensors", "lang/adapter.safetensors", "task/adapter.safetensors"]:
        expected.update(load_file(str(SRC / f)))
    rounded = {
        "bert.encoder.layer.1.output.adapters.lang.adapter_up.weight": torch.float16,
        "bert.invertible_adapters.lang.G.2.weight": torch.bfloat16,
    }
    state = model.state_dict()
    for k, v in expected.items():
        want = v.to(rounded[k]).float() if k in rounded else v
        assert torch.equal(state[k], want), k
        assert (k in rounded) != torch.equal(state[k], v), k
    return outs, hs


def main():
    mf.check_versions()
    torch.manual_seed(0)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)

    if DST.exists():
        shutil.rmtree(DST)
    DST.mkdir(parents=True)
    stored = {}
    write_model(stored)
    write_adapter("lang", stored)
    write_adapter("task", stored)
    write_flex_head()

    rec = json.loads((SRC / "case.json").read_text())
    outs, hs = reference_outputs(rec)
    before = torch.tensor(rec["outputs"]["logits"])
    rec["outputs"] = {k: mf.f32_list(v) for k, v in outs.items()}
    rec["last_hidden_state"] = mf.f32_list(hs)
    rec["stored"] = {k: sorted(v) for k, v in sorted(stored.items())}
    rec["containers"] = {
        "model/pytorch_model.bin": "legacy torch.save stream",
        "lang/pytorch_adapter.bin": "zip",
        "task/pytorch_adapter.bin": "zip",
    }
    rec["notes"] = (
        "bert_stack_cls_hf saved as an old Hub release: PyTorch pickles with legacy key names, v1 adapter "
        "configs without `version`; saved adapter names `en` (lang) and `sst` (task). Lang activation "
        "`gelu` (tanh GELU for the adapters library, also in NICE), task `gelu_orig` (erf GELU). "
        "Outputs computed by transformers + adapters loading these files. " + rec["notes"]
    )
    mf.dump_json(rec, DST / "case.json")
    diff = (outs["logits"] - before).abs().max().item()
    print(f"wrote {DST.relative_to(mf.ROOT)} (logits differ from the original case by {diff:.3g})")


if __name__ == "__main__":
    main()
