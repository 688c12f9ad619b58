"""Reference side of scripts/bench/bench-train.sh: MAD-X training steps with PyTorch +
transformers + the `adapters` library, the stack `toolkit train` is measured against.

  prepare  the benchmark inputs, shared by both sides: a random MAD-X language adapter
           (seq_bn_inv, reduction factor 2, AdapterHub layout, saved by `adapters`) and a
           synthetic NLI jsonl whose every pair is longer than --max-length tokens, so that
           each example is exactly --max-length tokens after truncation.
  run      one configuration in this process (run it in a fresh process per configuration, so
           that its peak RSS is that configuration's):
             standard  every task adapter trainable (12 of 12 at e5-small size)
             gu        only the top task adapter trainable, as early in gradual unfreezing
             fisher    one FUN tr(F) measurement over --fisher-batches batches
           and writes its timings as JSON. With --precision bf16 the forward and the loss run
           under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's own mixed precision.
           With --profile, the timed steps of standard or gu run under torch.profiler and the
           JSON gets seconds per step by category (scripts/bench/train_profile.py); the
           profiler's overhead makes that run's s/step unfit for ratios.

Training steps are what `toolkit train` does: Stack(lang, task) active, train mode (dropout
on), cross-entropy of the flex classification head, backward, gradient clipping to norm 1,
AdamW. The FUN measurement follows the paper's code without its deep copy of the model: eval
mode, labels = argmax of the model's prediction, backward of the batch-mean loss, and the sum
of squared gradients of each layer's task adapter.
"""
import argparse
import contextlib
import json
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_profile  # noqa: E402  (next to this file)

WORDS = (
    "the a of and to in is was for on that with as by at from his her their it this city river "
    "people government music team school century world war film company water market village "
    "history language church island station family season road north south early later large "
    "small new old first second many several during between after before under built known "
    "called named played moved became remained"
).split()


def prepare(args):
    import torch
    from adapters import AutoAdapterModel, SeqBnInvConfig
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    if not os.path.exists(os.path.join(args.lang_adapter, "adapter_config.json")):
        model = AutoAdapterModel.from_pretrained(args.model)
        model.add_adapter("en", config=SeqBnInvConfig(reduction_factor=2))
        os.makedirs(os.path.dirname(os.path.abspath(args.lang_adapter)), exist_ok=True)
        model.save_adapter(args.lang_adapter, "en", with_head=False, use_safetensors=True)
        print(f"language adapter (seq_bn_inv, reduction 2, random) -> {args.lang_adapter}")

    rng = random.Random(0)
    # Each side of the pair gets at least max_length words, and a word is at least one token,
    # so truncation always cuts every pair to exactly max_length tokens.
    n_words = args.max_length + 8
    records = []
    for _ in range(args.examples):
        premise = " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."
        hypothesis = " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."
        records.append({"premise": premise, "hypothesis": hypothesis, "label": rng.randrange(3)})
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    lengths = [len(e.ids) for e in tok.encode_batch([(r["premise"], r["hypothesis"]) for r in records])]
    if min(lengths) <= args.max_length:
        sys.exit(f"prepare: a pair has only {min(lengths)} tokens (need > {args.max_length})")
    os.makedirs(os.path.dirname(os.path.abspath(args.data)), exist_ok=True)
    tmp = args.data + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, args.data)
    print(f"{len(records)} NLI pairs of {min(lengths)}-{max(lengths)} tokens before truncation -> {args.data}")


def load_batches(args, torch):
    """All examples tokenized as the toolkit does (pair, longest-first truncation), as batches."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=args.max_length, strategy="longest_first")
    records = [json.loads(line) for line in open(args.data)]
    enc = tok.encode_batch([(r["premise"], r["hypothesis"]) for r in records])
    if any(len(e.ids) != args.max_length for e in enc):
        sys.exit(f"run: not every example is {args.max_length} tokens after truncation")
    ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
    types = torch.tensor([e.type_ids for e in enc], dtype=torch.long)
    mask = torch.ones_like(ids)
    labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
    batches = []
    for start in range(0, len(records) - args.batch_size + 1, args.batch_size):
        sl = slice(start, start + args.batch_size)
        batches.append((ids[sl], types[sl], mask[sl], labels[sl]))
    return batches


def run(args):
    import torch
    import torch.nn.functional as F
    from adapters import AutoAdapterModel, SeqBnConfig
    from adapters.composition import Stack
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batches = load_batches(args, torch)
    if not batches:
        sys.exit("run: fewer examples than one batch")

    model = AutoAdapterModel.from_pretrained(args.model)
    model.load_adapter(args.lang_adapter, load_as="en", with_head=False, use_safetensors=True)
    model.add_adapter("nli", config=SeqBnConfig(reduction_factor=16))
    model.add_classification_head("nli", num_labels=3)
    model.train_adapter("nli")
    model.active_adapters = Stack("en", "nli")
    model.train()

    layer_of = re.compile(r"\.layer\.(\d+)\.")
    task_params = {}  # layer -> its task adapter's parameters
    for name, p in model.named_parameters():
        if ".adapters.nli." in name:
            task_params.setdefault(int(layer_of.search(name).group(1)), []).append(p)
    layers = sorted(task_params)
    if args.config in ("gu", "fisher"):
        for layer in layers[:-1]:
            for p in task_params[layer]:
                p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)

    def autocast():
        if args.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(batch):
        ids, types, mask, labels = batch
        return model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits, labels

    def train_step(i):
        with autocast():
            logits, labels = forward(batches[i % len(batches)])
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A no-op unless profiling, where it tells the optimizer's elementwise ops apart.
        with torch.profiler.record_function(train_profile.OPTIMIZER_RANGE):
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
        return loss.item()

    def fisher_measurement(n_batches):
        """tr(F) of every task adapter, the paper's way: argmax labels, eval mode, squared grads."""
        flags = {id(p): p.requires_grad for ps in task_params.values() for p in ps}
        for ps in task_params.values():
            for p in ps:
                p.requires_grad_(True)
        model.eval()
        traces = {layer: 0.0 for layer in layers}
        for b in range(n_batches):
            model.zero_grad(set_to_none=True)
            with autocast():
                logits, _ = forward(batches[b % len(batches)])
                loss = F.cross_entropy(logits, logits.detach().argmax(-1))
            loss.backward()
            for layer in layers:
                traces[layer] += sum(float(p.grad.pow(2).sum()) for p in task_params[layer])
        model.zero_grad(set_to_none=True)
        model.train()
        for ps in task_params.values():
            for p in ps:
                p.requires_grad_(flags[id(p)])
        return {layer: t / n_batches for layer, t in traces.items()}

    result = {
        "config": args.config,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation,
        "trainable_task_adapters": sum(1 for ps in task_params.values() if ps[0].requires_grad),
        "trainable_params": sum(p.numel() for p in trainable),
    }
    train_step(0)  # warm-up: first-touch allocations, optimizer state
    if args.config == "fisher":
        start = time.perf_counter()
        traces = fisher_measurement(args.fisher_batches)
        result["fisher_seconds"] = time.perf_counter() - start
        result["fisher_batches"] = args.fisher_batches
        result["traces"] = [traces[layer] for layer in layers]
    else:
        profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    if args.profile else contextlib.nullcontext())
        with profiler:
            start = time.perf_counter()
            for i in range(1, args.steps + 1):
                train_step(i)
            elapsed = time.perf_counter() - start
        result["steps"] = args.steps
        result["seconds_per_step"] = elapsed / args.steps
        if args.profile:
            result["profile"] = train_profile.torch_profile(profiler, args.steps)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "traces"}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--model", required=True)
    p.add_argument("--lang-adapter", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--examples", type=int, required=True)
    p.add_argument("--max-length", type=int, default=128)
    p.set_defaults(func=prepare)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--lang-adapter", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--config", choices=["standard", "gu", "fisher"], required=True)
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--max-length", type=int, default=128)
    r.add_argument("--fisher-batches", type=int, default=40)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    r.add_argument("--profile", action="store_true")
    r.add_argument("--json", required=True)
    r.set_defaults(func=run)
    args = parser.parse_args()
    if args.command == "run" and args.profile and args.config == "fisher":
        parser.error("--profile applies to the standard and gu configurations")
    args.func(args)


if __name__ == "__main__":
    main()
